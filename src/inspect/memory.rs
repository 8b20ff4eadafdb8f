//! The memory a model needs at a given context size: its weights as stored plus a KV cache in
//! f16 or f32, and whether that fits this machine's RAM and GPU.

use serde::Serialize;

use super::machine::Machine;
use crate::engine::DEFAULT_CTX_CAP;

/// What the KV cache size depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvShape {
    /// Blocks.
    pub layers: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// Width of one key head.
    pub key_dim: u64,
    /// Width of one value head.
    pub value_dim: u64,
}

/// The estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// The context size the estimate is for (`-c`, default as `run`'s).
    pub ctx_size: u64,
    /// Bytes of tensor data.
    pub weights: u64,
    /// KV cache in f16 at `ctx_size` (null when the dimensions are unknown).
    pub kv_cache_f16: Option<u64>,
    /// KV cache in f32 at `ctx_size` (null when the dimensions are unknown).
    pub kv_cache_f32: Option<u64>,
    /// Weights plus the f16 KV cache.
    pub total_f16: Option<u64>,
    /// Weights plus the f32 KV cache.
    pub total_f32: Option<u64>,
    /// This machine.
    pub machine: Machine,
    /// Whether weights + f16 KV fit in RAM (null when RAM is unknown).
    pub fits_ram_f16: Option<bool>,
    /// Whether weights + f32 KV fit in RAM (null when RAM is unknown).
    pub fits_ram_f32: Option<bool>,
    /// Whether weights + f16 KV fit in GPU memory (null without a known GPU).
    pub fits_gpu_f16: Option<bool>,
    /// Whether weights + f32 KV fit in GPU memory (null without a known GPU).
    pub fits_gpu_f32: Option<bool>,
}

/// The context size `run` would use: `requested` (0 = the model's), else the model's capped
/// at [`DEFAULT_CTX_CAP`].
pub fn ctx_size(requested: Option<u64>, model_context: Option<u64>) -> u64 {
    match (requested, model_context) {
        (Some(0), Some(m)) => m,
        (Some(0), None) | (None, None) => DEFAULT_CTX_CAP as u64,
        (Some(n), _) => n,
        (None, Some(m)) => m.min(DEFAULT_CTX_CAP as u64),
    }
}

/// Estimates the memory for `weights` bytes and a KV cache of `kv` at `ctx` tokens.
pub fn estimate(weights: u64, kv: Option<KvShape>, ctx: u64, machine: Machine) -> Memory {
    let kv_bytes = |elem: u64| {
        let kv = kv?;
        kv.layers
            .checked_mul(kv.kv_heads)?
            .checked_mul(kv.key_dim.checked_add(kv.value_dim)?)?
            .checked_mul(ctx)?
            .checked_mul(elem)
    };
    let (f16, f32) = (kv_bytes(2), kv_bytes(4));
    let total = |kv: Option<u64>| kv.and_then(|k| k.checked_add(weights));
    let (total_f16, total_f32) = (total(f16), total(f32));
    let fits = |total: Option<u64>, cap: Option<u64>| Some(total? <= cap?);
    Memory {
        ctx_size: ctx,
        weights,
        kv_cache_f16: f16,
        kv_cache_f32: f32,
        total_f16,
        total_f32,
        fits_ram_f16: fits(total_f16, machine.ram_total),
        fits_ram_f32: fits(total_f32, machine.ram_total),
        fits_gpu_f16: fits(total_f16, machine.gpu_total),
        fits_gpu_f32: fits(total_f32, machine.gpu_total),
        machine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_counts_keys_and_values_of_every_layer() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64, at 4096 tokens.
        let kv = KvShape {
            layers: 30,
            kv_heads: 3,
            key_dim: 64,
            value_dim: 64,
        };
        let machine = Machine {
            ram_total: Some(1 << 30),
            ..Machine::default()
        };
        let m = estimate(100, Some(kv), 4096, machine);
        assert_eq!(m.kv_cache_f16, Some(30 * 3 * 128 * 4096 * 2));
        assert_eq!(m.kv_cache_f32, Some(30 * 3 * 128 * 4096 * 4));
        assert_eq!(m.total_f16, Some(30 * 3 * 128 * 4096 * 2 + 100));
        assert_eq!((m.fits_ram_f16, m.fits_ram_f32), (Some(true), Some(true)));
        assert_eq!(m.fits_gpu_f16, None);
        let tight = Machine {
            ram_total: Some(100 + 30 * 3 * 128 * 4096 * 3),
            ..Machine::default()
        };
        let m = estimate(100, Some(kv), 4096, tight);
        assert_eq!((m.fits_ram_f16, m.fits_ram_f32), (Some(true), Some(false)));
    }

    #[test]
    fn context_defaults_like_run() {
        assert_eq!(ctx_size(None, Some(8192)), 4096);
        assert_eq!(ctx_size(None, Some(2048)), 2048);
        assert_eq!(ctx_size(Some(0), Some(8192)), 8192);
        assert_eq!(ctx_size(Some(100), Some(8192)), 100);
    }
}
