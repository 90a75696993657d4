//! Named trainable parameters with seeded initialization. Frozen, so that "the seed fixes the
//! initialization" holds whatever the model code does, and so that checkpoints can save every
//! parameter without the model's help.

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Mixed into the run seed for the initialization stream.
const INIT_SALT: u64 = 0x1a17_0000_0000_0001;

pub struct ParamStore {
    vars: Vec<(String, Var)>,
    rng: ChaCha8Rng,
    device: Device,
}

impl ParamStore {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            vars: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ INIT_SALT),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new f32 parameter drawn from N(0, std^2) with the store's seeded generator; the
    /// returned tensor shares storage with the parameter, so optimizer updates reach it.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> candle_core::Result<Tensor> {
        let count: usize = shape.iter().product();
        let normal = Normal::new(0.0f32, std as f32)
            .map_err(|e| candle_core::Error::Msg(format!("parameter {name}: {e}")))?;
        let values: Vec<f32> = (0..count).map(|_| normal.sample(&mut self.rng)).collect();
        self.register(name, Tensor::from_vec(values, shape, &self.device)?)
    }

    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f64,
    ) -> candle_core::Result<Tensor> {
        let t = (Tensor::ones(shape, DType::F32, &self.device)? * value)?;
        self.register(name, t)
    }

    fn register(&mut self, name: &str, init: Tensor) -> candle_core::Result<Tensor> {
        if self.vars.iter().any(|(n, _)| n == name) {
            candle_core::bail!("parameter {name} is declared twice");
        }
        let var = Var::from_tensor(&init)?;
        let tensor = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(tensor)
    }

    /// Parameters in declaration order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}
