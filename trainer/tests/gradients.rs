//! Every parameter must receive a gradient: candle's fused norm / softmax / rope kernels have
//! no backward pass and would silently cut the graph.

use agentloop_trainer::config::{Config, OptimizerKind};
use agentloop_trainer::data::{BatchSource, TrainBatches};
use agentloop_trainer::model::Gpt;
use agentloop_trainer::params::ParamStore;
use agentloop_trainer::tokenizer::ByteTokenizer;
use agentloop_trainer::train::{self, cross_entropy};
use candle_core::Device;

mod common;

fn default_config() -> Config {
    agentloop_trainer::config::load(&common::default_config()).unwrap()
}

#[test]
fn every_parameter_of_the_default_model_gets_a_nonzero_gradient() {
    let cfg = default_config();
    let device = Device::Cpu;
    let mut params = ParamStore::new(3, &device);
    let model = Gpt::new(&cfg.model, &mut params).unwrap();
    let mut batches = TrainBatches::load(
        &common::corpus_dir(),
        &ByteTokenizer,
        cfg.train.batch_size,
        cfg.model.seq_len,
        3,
        &device,
    )
    .unwrap();
    let batch = batches.next_batch().unwrap();
    let loss = cross_entropy(&model.forward(&batch.inputs).unwrap(), &batch.targets).unwrap();
    let initial = loss.to_scalar::<f32>().unwrap();
    // A fresh model is near uniform over 257 tokens (ln 257 = 5.55).
    assert!((4.5..6.5).contains(&initial), "initial loss {initial}");
    assert!(params.vars().len() >= 2 + 6 * cfg.model.depth);
    assert!(agentloop_trainer::compute::Compute::for_device(&device).fused);
    // Both the evaluation's forward pass and the training loss under the default CPU
    // computation (the fused kernels since issue 21) must reach every parameter.
    let train_loss = model.loss(&batch.inputs, &batch.targets).unwrap();
    let train_value = train_loss.to_scalar::<f32>().unwrap();
    assert!(
        (train_value - initial).abs() < 1e-4 * initial,
        "training loss {train_value} vs evaluation loss {initial}"
    );
    for loss in [loss, train_loss] {
        assert_every_parameter_has_a_gradient(&params, &loss);
    }
}

fn assert_every_parameter_has_a_gradient(params: &ParamStore, loss: &candle_core::Tensor) {
    let grads = loss.backward().unwrap();
    for (name, var) in params.vars() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("parameter {name} received no gradient"));
        let norm = grad
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm.is_finite() && norm > 0.0,
            "parameter {name}: gradient norm^2 {norm}"
        );
    }
}

#[test]
fn both_optimizers_lower_the_training_loss_over_a_few_steps() {
    for kind in [OptimizerKind::Adamw, OptimizerKind::Muon] {
        let mut cfg = default_config();
        cfg.optim.optimizer = kind;
        cfg.optim.lr = if kind == OptimizerKind::Muon {
            0.02
        } else {
            0.01
        };
        cfg.optim.warmdown_frac = 0.0;
        let device = Device::Cpu;
        let mut training = train::build(&cfg, &device, 5).unwrap();
        let mut batches =
            TrainBatches::load(&common::corpus_dir(), &ByteTokenizer, 8, 32, 5, &device).unwrap();
        let first = training.step(&mut batches, 0.0).unwrap();
        let mut last = first;
        for i in 1..25 {
            last = training.step(&mut batches, i as f64 / 25.0).unwrap();
        }
        assert!(first.grad_norm > 0.0);
        assert!(
            last.loss < first.loss - 1.0,
            "{kind:?}: loss went from {} to {}",
            first.loss,
            last.loss
        );
    }
}
