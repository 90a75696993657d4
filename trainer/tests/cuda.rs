//! On a CUDA GPU (built with `--features cuda`): the fused kernels agree with their CPU
//! reference implementations, and one training step on CUDA (bf16 and f32, fused and
//! composite) agrees with the f32 CPU step in loss and in every parameter's gradient.
#![cfg(feature = "cuda")]

mod common;

use agentloop_trainer::compute::Compute;
use agentloop_trainer::config::Config;
use agentloop_trainer::data::{BatchSource, TrainBatches};
use agentloop_trainer::fused::{self, AdamWStep};
use agentloop_trainer::model::Gpt;
use agentloop_trainer::params::ParamStore;
use agentloop_trainer::tokenizer::ByteTokenizer;
use candle_core::{DType, Device, Tensor, Var};

fn cuda() -> Device {
    Device::new_cuda(0).expect("these tests need CUDA device 0")
}

/// ||a - b|| / ||b|| over all elements, in f32 on the CPU.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    norm(&(&a - &b).unwrap()) / norm(&b).max(1e-12)
}

fn random(shape: &[usize], std: f32, device: &Device) -> Tensor {
    Tensor::randn(0f32, std, shape, &Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap()
}

/// Value and gradient of `sum(f(x) * w)` on `device`, with `x` cast to `dtype` inside.
fn value_and_grad(
    x: &Tensor,
    w: &Tensor,
    device: &Device,
    dtype: DType,
    f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Tensor, Tensor) {
    let var = Var::from_tensor(&x.to_device(device).unwrap()).unwrap();
    let y = f(&var.as_tensor().to_dtype(dtype).unwrap()).unwrap();
    let loss = (y.to_dtype(DType::F32).unwrap() * w.to_device(device).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    (y, grads.get(var.as_tensor()).unwrap().clone())
}

fn check_against_cpu(
    what: &str,
    x: &Tensor,
    w: &Tensor,
    f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) {
    let gpu = cuda();
    let (y_ref, g_ref) = value_and_grad(x, w, &Device::Cpu, DType::F32, f);
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
        let (y, g) = value_and_grad(x, w, &gpu, dtype, f);
        assert!(y.device().is_cuda());
        let (ey, eg) = (rel_err(&y, &y_ref), rel_err(&g, &g_ref));
        assert!(ey < tol, "{what} {dtype:?}: value relative error {ey}");
        assert!(eg < tol, "{what} {dtype:?}: gradient relative error {eg}");
    }
}

#[test]
fn fused_kernels_match_their_cpu_reference() {
    let x = random(&[4, 33, 256], 2.0, &Device::Cpu);
    let w = random(&[4, 33, 256], 1.0, &Device::Cpu);
    check_against_cpu("rms_norm", &x, &w, &|x| fused::rms_norm(x, 1e-6));
    // Also a row longer than one warp's stride and shorter than a warp.
    let x = random(&[5, 2000], 1.0, &Device::Cpu);
    check_against_cpu("rms_norm long rows", &x, &x, &|x| fused::rms_norm(x, 1e-6));
    let x = random(&[7, 20], 1.0, &Device::Cpu);
    check_against_cpu("rms_norm short rows", &x, &x, &|x| fused::rms_norm(x, 1e-6));

    for t in [5, 64, 300] {
        let s = random(&[2, 3, t, t], 3.0, &Device::Cpu);
        let w = random(&[2, 3, t, t], 1.0, &Device::Cpu);
        check_against_cpu(&format!("causal_softmax t={t}"), &s, &w, &|s| {
            fused::causal_softmax(s, 0.125)
        });
    }

    let (n, vocab) = (37, 8192);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 977) % vocab as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let logits = random(&[n, vocab], 4.0, &Device::Cpu);
    let w = random(&[n], 1.0, &Device::Cpu);
    for cap in [0.0, 15.0] {
        let on = |device: &Device| targets.to_device(device).unwrap();
        let gpu_targets = on(&cuda());
        check_against_cpu(&format!("cross-entropy cap={cap}"), &logits, &w, &|l| {
            let t = if l.device().is_cuda() {
                &gpu_targets
            } else {
                &targets
            };
            fused::softcapped_cross_entropy(l, t, cap)
        });
    }
}

#[test]
fn fused_adamw_on_cuda_matches_the_cpu_reference() {
    let gpu = cuda();
    let param = random(&[300, 70], 1.0, &Device::Cpu);
    let grad = random(&[300, 70], 0.1, &Device::Cpu);
    let moments = Tensor::stack(
        &[
            &random(&[300, 70], 0.01, &Device::Cpu),
            &random(&[300, 70], 0.01, &Device::Cpu).abs().unwrap(),
        ],
        0,
    )
    .unwrap();
    let h = AdamWStep {
        lr: 0.01,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        step: 3,
        grad_scale: 0.7,
    };
    let run = |device: &Device| {
        let p = param.to_device(device).unwrap().copy().unwrap();
        let m = moments.to_device(device).unwrap().copy().unwrap();
        fused::adamw_step(&p, &m, &grad.to_device(device).unwrap(), &h).unwrap();
        (p, m)
    };
    let (p_cpu, m_cpu) = run(&Device::Cpu);
    let (p_gpu, m_gpu) = run(&gpu);
    assert!(
        rel_err(&p_gpu, &p_cpu) < 1e-6,
        "{}",
        rel_err(&p_gpu, &p_cpu)
    );
    assert!(
        rel_err(&m_gpu, &m_cpu) < 1e-6,
        "{}",
        rel_err(&m_gpu, &m_cpu)
    );
    assert!(
        rel_err(&p_gpu, &param) > 1e-4,
        "the update changed the parameter"
    );
}

fn small_config() -> Config {
    let mut cfg = Config::parse(common::TINY_CONFIG, "tiny.toml").unwrap();
    cfg.model.depth = 2;
    cfg.model.width = 128;
    cfg.model.heads = 2;
    cfg.model.seq_len = 64;
    cfg.train.batch_size = 4;
    cfg
}

/// Loss and every parameter's gradient (on the CPU, f32) of the first batch.
fn one_step(cfg: &Config, device: &Device, compute: Compute) -> (f32, Vec<(String, Tensor)>) {
    let mut params = ParamStore::new(7, device);
    let model = Gpt::with_compute(&cfg.model, &mut params, compute).unwrap();
    let mut batches = TrainBatches::load(
        &common::corpus_dir(),
        &ByteTokenizer,
        cfg.train.batch_size,
        cfg.model.seq_len,
        7,
        device,
    )
    .unwrap();
    let batch = batches.next_batch().unwrap();
    let loss = model.loss(&batch.inputs, &batch.targets).unwrap();
    let grads = loss.backward().unwrap();
    let named = params
        .vars()
        .iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient on {device:?} {compute:?}"));
            assert_eq!(g.dtype(), DType::F32, "{name}: master gradient dtype");
            let g = g.to_device(&Device::Cpu).unwrap();
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm.is_finite() && norm > 0.0,
                "{name}: gradient norm^2 {norm} ({compute:?})"
            );
            (name.clone(), g)
        })
        .collect();
    (loss.to_scalar::<f32>().unwrap(), named)
}

#[test]
fn one_training_step_on_cuda_agrees_with_the_cpu_step() {
    let cfg = small_config();
    let (loss_cpu, grads_cpu) = one_step(
        &cfg,
        &Device::Cpu,
        Compute {
            dtype: DType::F32,
            fused: false,
        },
    );
    let gpu = cuda();
    for (dtype, fused, tol) in [
        (DType::F32, false, 1e-3),
        (DType::F32, true, 1e-3),
        (DType::BF16, false, 5e-2),
        (DType::BF16, true, 5e-2),
    ] {
        let compute = Compute { dtype, fused };
        let (loss, grads) = one_step(&cfg, &gpu, compute);
        assert!(
            (loss - loss_cpu).abs() < tol * loss_cpu,
            "{compute:?}: loss {loss} vs CPU {loss_cpu}"
        );
        for ((name, g), (_, g_cpu)) in grads.iter().zip(&grads_cpu) {
            let e = rel_err(g, g_cpu);
            assert!(
                e < tol,
                "{compute:?}: gradient of {name} relative error {e}"
            );
        }
    }
}

#[test]
fn a_short_cuda_run_reports_gpu_memory_and_mfu() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "tiny.toml", common::TINY_CONFIG);
    let out = dir.path().join("run");
    let output = common::run(common::train_command(
        &config,
        &out,
        1,
        "5steps",
        &["--device", "cuda"],
    ));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        common::describe(&output)
    );
    let m = common::metrics(&out);
    assert_eq!(m["device"], "cuda");
    assert!(m["val_bpb"].as_f64().unwrap().is_finite());
    assert!(m["peak_mem_bytes"].as_u64().unwrap() > 0);
    let mfu = m["mfu"].as_f64().expect("mfu on CUDA");
    assert!(mfu > 0.0 && mfu < 1.0, "mfu {mfu}");
}
