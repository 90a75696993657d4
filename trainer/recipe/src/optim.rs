//! Optimizers (EDITABLE by the agent): AdamW with f32 moments, and Muon (Newton-Schulz
//! orthogonalized momentum) for the block matrices; global gradient clipping; a
//! warmup / constant / warmdown learning-rate schedule. With `fused`, AdamW runs as two
//! in-place kernels per tensor (`crate::fused::adamw_step`) on moments packed as `(2, ...)`.

use crate::config::{OptimConfig, OptimizerKind};
use crate::fused::{self, AdamWStep};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use std::collections::HashMap;

const ADAM_EPS: f64 = 1e-8;
/// Coefficients of the quintic Newton-Schulz iteration (Keller Jordan's Muon).
const NS_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);
const NS_STEPS: usize = 5;

/// Learning-rate multiplier at `progress` in [0, 1]: linear warmup, flat, linear warmdown to 0.
pub fn lr_multiplier(progress: f64, warmup_frac: f64, warmdown_frac: f64) -> f64 {
    if warmup_frac > 0.0 && progress < warmup_frac {
        return (progress / warmup_frac).max(0.0);
    }
    if warmdown_frac > 0.0 && progress > 1.0 - warmdown_frac {
        return ((1.0 - progress) / warmdown_frac).max(0.0);
    }
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Token embedding and output head: AdamW at `embed_lr`, no weight decay.
    Embedding,
    /// Matrices inside the blocks: AdamW or Muon at `lr`, with weight decay.
    Matrix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    AdamW,
    Muon,
}

struct Slot {
    name: String,
    var: Var,
    group: Group,
    rule: Rule,
    /// AdamW first moment, or Muon momentum buffer.
    m: Tensor,
    /// AdamW second moment (unused by Muon).
    v: Tensor,
    /// Fused AdamW: `m` and `v` stacked as `(2, ...)` and updated in place (then `m` and
    /// `v` above are unused).
    packed: Option<Tensor>,
}

pub struct Optimizer {
    cfg: OptimConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl Optimizer {
    pub fn new(cfg: &OptimConfig, params: Vec<(String, Var, Group)>) -> Result<Self> {
        Self::with_fused(cfg, params, false)
    }

    /// With `fused`, AdamW slots use the fused in-place update.
    pub fn with_fused(
        cfg: &OptimConfig,
        params: Vec<(String, Var, Group)>,
        fused: bool,
    ) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var, group)| {
                let rule = match (cfg.optimizer, group, var.rank()) {
                    (OptimizerKind::Muon, Group::Matrix, 2) => Rule::Muon,
                    _ => Rule::AdamW,
                };
                let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
                let packed = (fused && rule == Rule::AdamW)
                    .then(|| Tensor::stack(&[zeros()?, zeros()?], 0))
                    .transpose()?;
                Ok(Slot {
                    m: zeros()?,
                    v: zeros()?,
                    packed,
                    name,
                    var,
                    group,
                    rule,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            slots,
            step: 0,
        })
    }

    /// Applies one update from `grads` at `lr_mult` times the peak rates; returns the global
    /// gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr_mult: f64) -> Result<f64> {
        let mut squares = Vec::with_capacity(self.slots.len());
        let mut present = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            // Detached: the moments must not keep this step's autograd graph alive.
            let grad = grads
                .get(slot.var.as_tensor())
                .map(|g| g.detach().to_dtype(DType::F32))
                .transpose()?;
            if let Some(g) = &grad {
                squares.push(g.sqr()?.sum_all()?);
            }
            present.push(grad);
        }
        // One device-to-host copy for all tensors (a GPU sync each would stall the stream).
        let sum_sq = if squares.is_empty() {
            0.0
        } else {
            Tensor::stack(&squares, 0)?
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?
        };
        let norm = sum_sq.sqrt();
        let clip = self.cfg.grad_clip;
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        if !norm.is_finite() {
            return Ok(norm);
        }
        self.step += 1;
        for (slot, grad) in self.slots.iter_mut().zip(present) {
            let Some(grad) = grad else { continue };
            let grad = if slot.packed.is_some() {
                grad // scaled inside the fused kernel
            } else {
                (grad * scale)?
            };
            let (lr, wd) = match slot.group {
                Group::Embedding => (self.cfg.embed_lr * lr_mult, 0.0),
                Group::Matrix => (self.cfg.lr * lr_mult, self.cfg.weight_decay),
            };
            if let Some(packed) = &slot.packed {
                let h = AdamWStep {
                    lr,
                    weight_decay: wd,
                    beta1: self.cfg.beta1,
                    beta2: self.cfg.beta2,
                    eps: ADAM_EPS,
                    step: self.step,
                    grad_scale: scale,
                };
                fused::adamw_step(slot.var.as_tensor(), packed, &grad, &h)?;
                continue;
            }
            match slot.rule {
                Rule::AdamW => adamw_update(slot, &grad, lr, wd, &self.cfg, self.step)?,
                Rule::Muon => muon_update(slot, &grad, lr, wd, self.cfg.muon_momentum)?,
            }
        }
        Ok(norm)
    }

    /// Moments and step count, for checkpoints.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        let tensors = self
            .slots
            .iter()
            .map(|s| {
                let (m, v) = match &s.packed {
                    // Copies: the packed moments keep changing in place.
                    Some(p) => (p.get(0)?.copy()?, p.get(1)?.copy()?),
                    None => (s.m.clone(), s.v.clone()),
                };
                Ok([
                    (format!("optim.{}.m", s.name), m),
                    (format!("optim.{}.v", s.name), v),
                ])
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        Ok((tensors, self.step))
    }

    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for slot in &mut self.slots {
            for (suffix, dst) in [("m", &mut slot.m), ("v", &mut slot.v)] {
                let key = format!("optim.{}.{suffix}", slot.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks {key}")))?;
                if t.shape() != dst.shape() {
                    candle_core::bail!(
                        "checkpoint tensor {key} has shape {:?}, expected {:?}",
                        t.shape(),
                        dst.shape()
                    );
                }
                *dst = t.clone();
            }
            if let Some(packed) = &mut slot.packed {
                *packed = Tensor::stack(&[&slot.m, &slot.v], 0)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

fn adamw_update(
    slot: &mut Slot,
    grad: &Tensor,
    lr: f64,
    wd: f64,
    cfg: &OptimConfig,
    t: u64,
) -> Result<()> {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    slot.m = ((&slot.m * b1)? + (grad * (1.0 - b1))?)?;
    slot.v = ((&slot.v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
    let m_hat = (&slot.m / (1.0 - b1.powi(t as i32)))?;
    let v_hat = (&slot.v / (1.0 - b2.powi(t as i32)))?;
    let update = m_hat.div(&(v_hat.sqrt()? + ADAM_EPS)?)?;
    let param = slot.var.as_detached_tensor();
    let decayed = (param * (1.0 - lr * wd))?;
    slot.var.set(&(decayed - (update * lr)?)?)
}

fn muon_update(slot: &mut Slot, grad: &Tensor, lr: f64, wd: f64, momentum: f64) -> Result<()> {
    slot.m = ((&slot.m * momentum)? + grad)?;
    let nesterov = (grad + (&slot.m * momentum)?)?;
    let ortho = newton_schulz(&nesterov)?;
    let (rows, cols) = ortho.dims2()?;
    let shape_scale = (rows as f64 / cols as f64).max(1.0).sqrt();
    let param = slot.var.as_detached_tensor();
    let decayed = (param * (1.0 - lr * wd))?;
    slot.var.set(&(decayed - (ortho * (lr * shape_scale))?)?)
}

/// Approximately the nearest semi-orthogonal matrix to `g` (U V^T of its SVD).
fn newton_schulz(g: &Tensor) -> Result<Tensor> {
    let (a, b, c) = NS_COEFFS;
    let (rows, cols) = g.dims2()?;
    let norm = f64::from(g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
    let mut x = (g / (norm + 1e-7))?;
    let tall = rows > cols;
    if tall {
        x = x.t()?.contiguous()?;
    }
    for _ in 0..NS_STEPS {
        let xt = x.t()?.contiguous()?;
        let gram = x.matmul(&xt)?;
        let poly = ((&gram * b)? + (gram.matmul(&gram)? * c)?)?;
        x = ((&x * a)? + poly.matmul(&x)?)?;
    }
    if tall {
        x = x.t()?.contiguous()?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_holds_and_warms_down_to_zero() {
        assert_eq!(lr_multiplier(0.0, 0.1, 0.5), 0.0);
        assert!((lr_multiplier(0.05, 0.1, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(lr_multiplier(0.3, 0.1, 0.5), 1.0);
        assert!((lr_multiplier(0.75, 0.1, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(lr_multiplier(1.0, 0.1, 0.5), 0.0);
        assert_eq!(lr_multiplier(0.0, 0.0, 0.0), 1.0);
    }

    fn adamw_config() -> OptimConfig {
        OptimConfig {
            optimizer: OptimizerKind::Adamw,
            lr: 0.05,
            embed_lr: 0.02,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            warmup_frac: 0.0,
            warmdown_frac: 0.0,
            // Small enough that the first steps are clipped.
            grad_clip: 0.5,
            muon_momentum: 0.95,
        }
    }

    /// Two parameters (one per group) and an optimizer over them.
    fn setup(fused: bool) -> (Vec<Var>, Optimizer) {
        let vars = vec![
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap()).unwrap(),
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (5,), &Device::Cpu).unwrap()).unwrap(),
        ];
        let params = vec![
            ("w".to_string(), vars[0].clone(), Group::Matrix),
            ("e".to_string(), vars[1].clone(), Group::Embedding),
        ];
        (
            vars,
            Optimizer::with_fused(&adamw_config(), params, fused).unwrap(),
        )
    }

    /// A loss whose gradient changes from step to step.
    fn step(vars: &[Var], opt: &mut Optimizer, i: usize) -> f64 {
        let target = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 6))
            .unwrap();
        let loss = ((vars[0].as_tensor() - (target * (0.1 * i as f64)).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            + vars[1].as_tensor().powf(3.0).unwrap().sum_all().unwrap())
        .unwrap();
        opt.step(&loss.backward().unwrap(), 1.0).unwrap()
    }

    #[test]
    fn fused_adamw_matches_the_composite_update_and_survives_a_checkpoint() {
        let (vars, mut composite) = setup(false);
        let (fused_vars, mut fused) = setup(true);
        for (a, b) in vars.iter().zip(&fused_vars) {
            b.set(a.as_tensor()).unwrap();
        }
        for i in 0..3 {
            let (n1, n2) = (
                step(&vars, &mut composite, i),
                step(&fused_vars, &mut fused, i),
            );
            assert!((n1 - n2).abs() < 1e-4 * n1, "grad norm {n1} vs {n2}");
        }
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            d.max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        for (a, b) in vars.iter().zip(&fused_vars) {
            let diff = close(a.as_tensor(), b.as_tensor());
            assert!(diff < 1e-5, "parameters differ by {diff}");
        }
        // The fused moments are saved and restored like the composite ones.
        let (saved, at) = fused.state().unwrap();
        let (saved_ref, _) = composite.state().unwrap();
        for ((name, t), (_, t_ref)) in saved.iter().zip(&saved_ref) {
            assert!(
                close(t, t_ref) < 1e-5,
                "{name} differs from the composite moment"
            );
        }
        let (resumed_vars, mut resumed) = setup(true);
        for (a, b) in fused_vars.iter().zip(&resumed_vars) {
            b.set(a.as_tensor()).unwrap();
        }
        resumed.restore(&saved.into_iter().collect(), at).unwrap();
        step(&fused_vars, &mut fused, 3);
        step(&resumed_vars, &mut resumed, 3);
        for (a, b) in fused_vars.iter().zip(&resumed_vars) {
            assert_eq!(close(a.as_tensor(), b.as_tensor()), 0.0);
        }
    }

    #[test]
    fn newton_schulz_output_has_singular_values_near_one() {
        let g = Tensor::randn(0f32, 1.0, (8, 16), &Device::Cpu).unwrap();
        let x = newton_schulz(&g).unwrap();
        let gram = x.matmul(&x.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in gram.iter().enumerate() {
            // Muon's quintic iteration lands singular values in roughly [0.7, 1.2].
            assert!((0.4..1.5).contains(&row[i]), "diagonal {i}: {}", row[i]);
        }
    }
}
