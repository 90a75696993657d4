//! With the `cuda` feature, compiles `kernels/fused.cu` to PTX for the fused ops
//! (`src/fused/`); the driver JIT-compiles it at load time. nvcc is taken from
//! `$CUDA_ROOT/bin` (set by `shared/gpu/cuda-env.sh` or a CUDA install) or `PATH`, and the
//! target from `CUDA_COMPUTE_CAP` (default 90, the H100).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/fused.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fused.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("--gpu-architecture=sm_{cap}")])
        .arg("kernels/fused.cu")
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (is the CUDA toolkit set up?): {e}",
                nvcc.display()
            )
        });
    assert!(status.success(), "nvcc failed to compile kernels/fused.cu");
}
