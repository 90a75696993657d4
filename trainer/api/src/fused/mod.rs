//! Fused training ops with their backward passes, as candle custom ops (frozen; the model
//! and optimizer choose whether to call them). Each op has a CPU implementation, the
//! reference that the tests hold against the composite candle version (values and
//! gradients through candle's autograd), and with the `cuda` feature a CUDA kernel from
//! `kernels/fused.cu` that computes the same thing. Statistics (sums, maxima, log-sum-exp)
//! are kept in f32 whatever the tensor dtype. `norm_rope_heads` and `relu_sq` have CPU kernels
//! only: on other devices they run as the composite candle ops (with the fused RMSNorm).

mod adamw;
mod cpu;
mod cross_entropy;
#[cfg(feature = "cuda")]
mod cuda;
mod norm_rope;
mod relu_sq;
mod rms_norm;
mod softmax;

pub use adamw::{adamw_step, AdamWStep};
pub use cross_entropy::softcapped_cross_entropy;
pub use norm_rope::norm_rope_heads;
pub use relu_sq::relu_sq;
pub use rms_norm::rms_norm;
pub use softmax::causal_softmax;
