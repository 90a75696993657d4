//! Loading a run's inputs (config, tokenizer, device, training batches, evaluation tokens).

use super::access::EvalAccess;
use super::{DeviceKind, RunArgs};
use crate::compute::Compute;
use crate::config::Config;
use crate::data::{self, TrainBatches};
use crate::tokenizer::Tokenizer;
use candle_core::Device;
use std::path::Path;

/// Everything loaded before training starts; any failure here is bad input (exit 2).
pub(super) struct Prepared {
    pub(super) config: Config,
    pub(super) tokenizer: Box<dyn Tokenizer>,
    pub(super) device: Device,
    pub(super) compute: Compute,
    pub(super) batches: TrainBatches,
    /// Loaded before training (bad data fails fast), only when the run evaluates.
    pub(super) eval_tokens: Option<data::EvalTokens>,
}

/// The config and the data's tokenizer, checked against each other.
pub(super) fn load_config(
    config: &Path,
    data: &Path,
) -> anyhow::Result<(Config, Box<dyn Tokenizer>)> {
    let parsed = crate::config::load(config)?;
    let tokenizer = data::tokenizer_for(data)?;
    if parsed.model.vocab_size < tokenizer.vocab_size() {
        anyhow::bail!(
            "config file {}: `model.vocab_size` is {} but the tokenizer has {} tokens",
            config.display(),
            parsed.model.vocab_size,
            tokenizer.vocab_size()
        );
    }
    Ok((parsed, tokenizer))
}

pub(super) fn open_device(kind: DeviceKind) -> anyhow::Result<Device> {
    Ok(match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => {
            Device::new_cuda(0).map_err(|e| anyhow::anyhow!("cannot open CUDA device 0: {e}"))?
        }
    })
}

pub(super) fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let (config, tokenizer) = load_config(&args.config, &args.data)?;
    let device = open_device(args.device)?;
    let compute = Compute::resolve(&device, args.precision, args.fused)?;
    let batches = TrainBatches::load(
        &args.data,
        tokenizer.as_ref(),
        config.train.batch_size,
        config.model.seq_len,
        args.seed,
        &device,
    )?;
    let eval_tokens = args
        .split
        .map(|split| {
            data::load_eval_tokens(&args.data, split, tokenizer.as_ref(), &EvalAccess::new())
        })
        .transpose()?;
    Ok(Prepared {
        config,
        tokenizer,
        device,
        compute,
        batches,
        eval_tokens,
    })
}
