//! The fused ops' CPU implementations (the reference for the CUDA kernels) against the
//! composite candle ops they replace: values and gradients through candle's autograd; and
//! the model with fused ops or a reduced compute dtype against the f32 composite model.

mod common;

use agentloop_trainer::compute::Compute;
use agentloop_trainer::config::Config;
use agentloop_trainer::data::{BatchSource, TrainBatches};
use agentloop_trainer::fused;
use agentloop_trainer::model::Gpt;
use agentloop_trainer::params::ParamStore;
use agentloop_trainer::tokenizer::ByteTokenizer;
use candle_core::{DType, Device, Tensor, Var, D};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `got` is within `rel` of `want`, relative to `want`'s largest magnitude.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let (diff, scale) = (max_abs_diff(got, want), max_abs(want).max(1e-6));
    assert!(
        diff <= rel * scale,
        "{what}: max |diff| {diff} exceeds {rel} x {scale}"
    );
}

/// Value of `f(x)` and the gradient of `sum(f(x) * weights)` with respect to `x`.
fn value_and_grad(
    x: &Var,
    weights: &Tensor,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (Tensor, Tensor) {
    let y = f(x.as_tensor()).unwrap();
    let loss = (y.to_dtype(DType::F32).unwrap() * weights)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let grad = grads.get(x.as_tensor()).expect("x has a gradient").clone();
    (y, grad)
}

fn random(shape: &[usize], std: f32, seed: u64) -> Tensor {
    // Deterministic pseudo-random values without a global RNG.
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * std
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn composite_rms_norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(mean_sq + 1e-6)?.sqrt()?)
}

#[test]
fn fused_rms_norm_matches_the_composite_in_value_and_gradient() {
    let x = Var::from_tensor(&random(&[3, 5, 48], 2.0, 1)).unwrap();
    let w = random(&[3, 5, 48], 1.0, 2);
    let (y_ref, g_ref) = value_and_grad(&x, &w, composite_rms_norm);
    let (y, g) = value_and_grad(&x, &w, |x| fused::rms_norm(x, 1e-6));
    assert_close("rms_norm value", &y, &y_ref, 1e-5);
    assert_close("rms_norm gradient", &g, &g_ref, 1e-4);

    // bf16 input: statistics stay f32, so only bf16 rounding separates it from f32.
    let (y16, g16) = value_and_grad(&x, &w, |x| fused::rms_norm(&x.to_dtype(DType::BF16)?, 1e-6));
    assert_eq!(y16.dtype(), DType::BF16);
    assert_close("rms_norm bf16 value", &y16, &y_ref, 1e-2);
    assert_close("rms_norm bf16 gradient", &g16, &g_ref, 3e-2);
}

fn composite_causal_softmax(scores: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let t = scores.dim(D::Minus1)?;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), scores.device())?;
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&mask)?, D::Minus1)
}

#[test]
fn fused_causal_softmax_matches_the_composite_in_value_and_gradient() {
    let s = Var::from_tensor(&random(&[2, 3, 7, 7], 4.0, 3)).unwrap();
    let w = random(&[2, 3, 7, 7], 1.0, 4);
    let scale = 0.35;
    let (y_ref, g_ref) = value_and_grad(&s, &w, |s| composite_causal_softmax(s, scale));
    let (y, g) = value_and_grad(&s, &w, |s| fused::causal_softmax(s, scale));
    assert_close("causal_softmax value", &y, &y_ref, 1e-5);
    assert_close("causal_softmax gradient", &g, &g_ref, 1e-4);
    // Keys after the query get exactly zero weight.
    let row = y.get(0).unwrap().get(0).unwrap().get(2).unwrap();
    let row = row.to_vec1::<f32>().unwrap();
    assert!(row[3..].iter().all(|&p| p == 0.0), "{row:?}");
    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);

    let err = fused::causal_softmax(&random(&[2, 3, 4], 1.0, 5), 1.0).unwrap_err();
    assert!(err.to_string().contains("square"), "{err}");
}

fn composite_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    cap: f64,
) -> candle_core::Result<Tensor> {
    let logits = if cap > 0.0 {
        ((logits / cap)?.tanh()? * cap)?
    } else {
        logits.clone()
    };
    candle_nn::loss::cross_entropy(&logits, targets)
}

#[test]
fn fused_softcapped_cross_entropy_matches_the_composite_in_value_and_gradient() {
    let (n, vocab) = (9, 37);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 11) % vocab as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    for cap in [0.0, 15.0, 2.0] {
        let logits = Var::from_tensor(&random(&[n, vocab], 6.0, 6)).unwrap();
        let reference = composite_cross_entropy(logits.as_tensor(), &targets, cap).unwrap();
        let g_ref = reference.backward().unwrap();
        let g_ref = g_ref.get(logits.as_tensor()).unwrap();
        let per_row = fused::softcapped_cross_entropy(logits.as_tensor(), &targets, cap).unwrap();
        assert_eq!(per_row.dims(), [n]);
        let loss = per_row.mean_all().unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(logits.as_tensor()).unwrap();
        let (a, b) = (
            loss.to_scalar::<f32>().unwrap(),
            reference.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-5 * b.abs().max(1.0),
            "cap {cap}: loss {a} vs {b}"
        );
        assert_close(
            &format!("cross-entropy gradient, cap {cap}"),
            g,
            g_ref,
            1e-4,
        );

        // bf16 logits: f32 log-sum-exp keeps the loss within bf16 rounding of the logits.
        let l16 = logits.as_tensor().to_dtype(DType::BF16).unwrap();
        let a16 = fused::softcapped_cross_entropy(&l16, &targets, cap)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (a16 - b).abs() < 2e-2 * b.abs().max(1.0),
            "cap {cap}: bf16 loss {a16} vs {b}"
        );
    }
    let bad = Tensor::new(&[0u32, 99, 1, 2, 3, 4, 5, 6, 7], &Device::Cpu).unwrap();
    let err = fused::softcapped_cross_entropy(&random(&[n, vocab], 1.0, 7), &bad, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 99") && err.contains("37"), "{err}");
}

/// The head split, QK-norm and rotation of `model.rs` as plain candle ops.
fn composite_norm_rope_heads(
    x: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let hd = d / heads;
    let n = composite_rms_norm(
        &x.reshape((b, t, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?,
    )?;
    let (cos, sin) = (cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?);
    let half = hd / 2;
    let n1 = n.narrow(D::Minus1, 0, half)?;
    let n2 = n.narrow(D::Minus1, half, half)?;
    let y1 = (n1.broadcast_mul(&cos)? - n2.broadcast_mul(&sin)?)?;
    let y2 = (n1.broadcast_mul(&sin)? + n2.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y1, y2], D::Minus1)
}

#[test]
fn fused_norm_rope_heads_matches_the_composite_and_finite_differences() {
    // (b, t, heads * hd) with rotary tables longer than t, as the model passes them.
    let (b, t, heads, hd) = (2, 5, 3, 8);
    let x = Var::from_tensor(&random(&[b, t, heads * hd], 2.0, 8)).unwrap();
    let w = random(&[b, heads, t, hd], 1.0, 9);
    let cos = random(&[7, hd / 2], 1.0, 10);
    let sin = random(&[7, hd / 2], 1.0, 11);
    let (y_ref, g_ref) =
        value_and_grad(&x, &w, |x| composite_norm_rope_heads(x, heads, &cos, &sin));
    let fused_op = |x: &Tensor| fused::norm_rope_heads(x, heads, &cos, &sin, 1e-6);
    let (y, g) = value_and_grad(&x, &w, fused_op);
    assert_eq!(y.dims(), [b, heads, t, hd]);
    assert_close("norm_rope_heads value", &y, &y_ref, 1e-5);
    assert_close("norm_rope_heads gradient", &g, &g_ref, 1e-4);

    // Central differences of sum(y * w) in f64 arithmetic of the f32 op, on a few inputs.
    let base: Vec<f32> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let objective = |v: &[f32]| -> f64 {
        let xt = Tensor::from_vec(v.to_vec(), (b, t, heads * hd), &Device::Cpu).unwrap();
        let y = fused_op(&xt).unwrap();
        let p: Vec<f32> = (y * &w).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        p.iter().map(|&a| f64::from(a)).sum()
    };
    let analytic: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    for i in [0, 7, 31, 64, base.len() - 1] {
        let h = 1e-2f32;
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (objective(&up) - objective(&down)) / (2.0 * f64::from(h));
        let a = f64::from(analytic[i]);
        assert!(
            (numeric - a).abs() < 2e-2 * a.abs().max(0.1),
            "input {i}: analytic {a} vs finite difference {numeric}"
        );
    }

    // Half precision keeps f32 statistics: within f16 rounding of the f32 result.
    let (y16, g16) = value_and_grad(&x, &w, |x| {
        fused::norm_rope_heads(&x.to_dtype(DType::F16)?, heads, &cos, &sin, 1e-6)
    });
    assert_eq!(y16.dtype(), DType::F16);
    assert_close("norm_rope_heads f16 value", &y16, &y_ref, 1e-2);
    assert_close("norm_rope_heads f16 gradient", &g16, &g_ref, 3e-2);

    let err = fused::norm_rope_heads(x.as_tensor(), 5, &cos, &sin, 1e-6).unwrap_err();
    assert!(err.to_string().contains("heads"), "{err}");
    let short = random(&[4, hd / 2], 1.0, 12);
    let err = fused::norm_rope_heads(x.as_tensor(), heads, &short, &short, 1e-6).unwrap_err();
    assert!(err.to_string().contains("rotary tables"), "{err}");
}

#[test]
fn fused_relu_sq_matches_the_composite_in_value_and_gradient_and_keeps_nan() {
    let x = Var::from_tensor(&random(&[4, 6, 40], 3.0, 13)).unwrap();
    let w = random(&[4, 6, 40], 1.0, 14);
    let (y_ref, g_ref) = value_and_grad(&x, &w, |x| x.relu()?.sqr());
    let (y, g) = value_and_grad(&x, &w, fused::relu_sq);
    assert_close("relu_sq value", &y, &y_ref, 1e-6);
    assert_close("relu_sq gradient", &g, &g_ref, 1e-6);
    let nan = Tensor::new(&[f32::NAN, -1.0, 2.0], &Device::Cpu).unwrap();
    let out = fused::relu_sq(&nan).unwrap().to_vec1::<f32>().unwrap();
    assert!(out[0].is_nan() && out[1] == 0.0 && out[2] == 4.0, "{out:?}");
}

fn tiny_config() -> Config {
    let mut cfg = Config::parse(common::TINY_CONFIG, "tiny.toml").unwrap();
    cfg.model.depth = 2;
    cfg
}

/// Loss and named gradients of one training batch under `compute`.
fn loss_and_grads(cfg: &Config, compute: Compute) -> (f32, Vec<(String, Tensor)>) {
    let device = Device::Cpu;
    let mut params = ParamStore::new(11, &device);
    let model = Gpt::with_compute(&cfg.model, &mut params, compute).unwrap();
    let mut batches = TrainBatches::load(
        &common::corpus_dir(),
        &ByteTokenizer,
        cfg.train.batch_size,
        cfg.model.seq_len,
        11,
        &device,
    )
    .unwrap();
    let batch = batches.next_batch().unwrap();
    let loss = model.loss(&batch.inputs, &batch.targets).unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    let grads = loss.backward().unwrap();
    let named = params
        .vars()
        .iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} received no gradient"))
                .clone();
            assert_eq!(g.dtype(), DType::F32, "{name}: master gradient dtype");
            assert!(max_abs(&g) > 0.0, "{name}: zero gradient");
            (name.clone(), g)
        })
        .collect();
    (loss.to_scalar::<f32>().unwrap(), named)
}

fn assert_same_step(
    what: &str,
    got: &(f32, Vec<(String, Tensor)>),
    want: &(f32, Vec<(String, Tensor)>),
    rel: f32,
) {
    assert!(
        (got.0 - want.0).abs() <= rel * want.0.abs(),
        "{what}: loss {} vs {}",
        got.0,
        want.0
    );
    for ((name, g), (_, g_ref)) in got.1.iter().zip(&want.1) {
        assert_close(&format!("{what}: gradient of {name}"), g, g_ref, rel * 10.0);
    }
}

#[test]
fn the_model_with_fused_ops_matches_the_composite_model_on_cpu() {
    let cfg = tiny_config();
    let composite = loss_and_grads(
        &cfg,
        Compute {
            dtype: DType::F32,
            fused: false,
        },
    );
    let fused = loss_and_grads(
        &cfg,
        Compute {
            dtype: DType::F32,
            fused: true,
        },
    );
    assert_same_step("fused f32", &fused, &composite, 1e-5);
}

#[test]
fn a_half_precision_forward_trains_f32_master_weights_close_to_f32() {
    // CPU matmul refuses bf16, so f16 exercises the same casting path here (on CUDA it is
    // bf16): f32 parameters cast at use, gradients back in f32, f32 loss and statistics.
    let cfg = tiny_config();
    let f32_step = loss_and_grads(
        &cfg,
        Compute {
            dtype: DType::F32,
            fused: false,
        },
    );
    for fused in [false, true] {
        let half = loss_and_grads(
            &cfg,
            Compute {
                dtype: DType::F16,
                fused,
            },
        );
        assert_same_step(&format!("f16 fused={fused}"), &half, &f32_step, 1e-2);
    }
}

#[test]
fn evaluation_logits_do_not_depend_on_the_training_computation() {
    let cfg = tiny_config();
    let device = Device::Cpu;
    let tokens = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &device).unwrap();
    let logits = |compute| {
        let mut params = ParamStore::new(5, &device);
        Gpt::with_compute(&cfg.model, &mut params, compute)
            .unwrap()
            .forward(&tokens)
            .unwrap()
    };
    let reference = logits(Compute {
        dtype: DType::F32,
        fused: false,
    });
    let other = logits(Compute {
        dtype: DType::F16,
        fused: true,
    });
    assert_eq!(other.dtype(), DType::F32);
    assert_eq!(max_abs_diff(&reference, &other), 0.0);
}
