//! How numbers are computed: the CPU products per weight type with run-time SIMD dispatch,
//! the thread pool, attention and activation kernels ([`cpu`]), and the fused CUDA decoder
//! (`cuda`, behind the `cuda` feature; the engine picks it per model in `engine::decoder`).
//!
//! Nothing here knows a model family: kernels take slices, tensors, and (for the fused
//! decoder) a [`crate::models::Recipe`] that describes a decoder in layer terms.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// The activation of a gated MLP's gate (`act(gate) * up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU, Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}
