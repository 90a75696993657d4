//! The training step (EDITABLE by the agent): how one optimizer step turns training batches
//! into a parameter update. The runner around it (budget, divergence checks, checkpoints,
//! evaluation) is frozen, in the `agentloop-trainer` crate, out of this crate's reach.

use crate::compute::Compute;
use crate::config::Config;
use crate::contract::{BatchSource, LanguageModel, StepStats, TrainState, Training};
use crate::model::Gpt;
use crate::optim::{lr_multiplier, Group, Optimizer};
use crate::params::ParamStore;
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;

pub struct GptTraining {
    model: Gpt,
    params: ParamStore,
    optimizer: Optimizer,
    cfg: Config,
}

/// Builds the model and its optimizer with the default computation for `device`; `seed`
/// fixes the initialization.
pub fn build(cfg: &Config, device: &Device, seed: u64) -> Result<Box<dyn Training>> {
    build_with(cfg, device, seed, Compute::for_device(device))
}

/// Like [`build`], with the compute dtype and kernels chosen by the caller.
pub fn build_with(
    cfg: &Config,
    device: &Device,
    seed: u64,
    compute: Compute,
) -> Result<Box<dyn Training>> {
    let mut params = ParamStore::new(seed, device);
    let model = Gpt::with_compute(&cfg.model, &mut params, compute)?;
    let groups = params
        .vars()
        .iter()
        .map(|(name, var)| {
            let group = if name == "wte" || name == "lm_head" {
                Group::Embedding
            } else {
                Group::Matrix
            };
            (name.clone(), var.clone(), group)
        })
        .collect();
    let optimizer = Optimizer::with_fused(&cfg.optim, groups, compute.fused)?;
    Ok(Box::new(GptTraining {
        model,
        params,
        optimizer,
        cfg: cfg.clone(),
    }))
}

/// Mean cross-entropy (nats per token) of `(batch, len, vocab)` logits against targets.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let vocab = logits.dim(2)?;
    candle_nn::loss::cross_entropy(
        &logits.to_dtype(DType::F32)?.reshape(((), vocab))?,
        &targets.flatten_all()?,
    )
}

impl Training for GptTraining {
    fn step(&mut self, batches: &mut dyn BatchSource, progress: f64) -> Result<StepStats> {
        let batch = batches.next_batch()?;
        let loss = self.model.loss(&batch.inputs, &batch.targets)?;
        crate::memory::sample_device_memory(batch.inputs.device());
        let grads = loss.backward()?;
        let o = &self.cfg.optim;
        let lr_mult = lr_multiplier(progress, o.warmup_frac, o.warmdown_frac);
        let grad_norm = self.optimizer.step(&grads, lr_mult)?;
        Ok(StepStats {
            loss: f64::from(loss.to_scalar::<f32>()?),
            grad_norm,
            lr: o.lr * lr_mult,
        })
    }

    fn model(&self) -> &dyn LanguageModel {
        &self.model
    }

    fn param_count(&self) -> usize {
        self.params.count()
    }

    fn state(&self) -> Result<TrainState> {
        let mut tensors: Vec<(String, Tensor)> = self
            .params
            .vars()
            .iter()
            .map(|(name, var)| (format!("param.{name}"), var.as_detached_tensor()))
            .collect();
        let (moments, step) = self.optimizer.state()?;
        tensors.extend(moments);
        Ok(TrainState {
            tensors,
            meta: serde_json::json!({ "optimizer_step": step }),
        })
    }

    fn restore(&mut self, state: TrainState) -> Result<()> {
        let tensors: HashMap<String, Tensor> = state.tensors.into_iter().collect();
        for (name, var) in self.params.vars() {
            let key = format!("param.{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks {key}")))?;
            if t.shape() != var.shape() {
                candle_core::bail!(
                    "checkpoint tensor {key} has shape {:?}, expected {:?}",
                    t.shape(),
                    var.shape()
                );
            }
            var.set(t)?;
        }
        let step = state.meta["optimizer_step"]
            .as_u64()
            .ok_or_else(|| candle_core::Error::Msg("checkpoint lacks optimizer_step".into()))?;
        self.optimizer.restore(&tensors, step)
    }
}
