//! The memory a model needs at a given context size: its weights as stored plus its cache
//! (keys and values in f16 or f32, recurrent state in f32), and whether that fits this
//! machine's RAM and GPU.
//!
//! The cache is estimated layer by layer from the description the engine's cache is built
//! from ([`crate::models::CausalLm::cache_layout`], with each layer's KV width): full KV grows
//! with the context, a sliding window stops at what the engine reserves for it, a layer that
//! shares an earlier layer's KV stores nothing, and recurrent or convolution state is a fixed
//! size. A new kind of cache entry is one arm in [`layer_cache`].

use serde::Serialize;

use super::machine::Machine;
use crate::engine::cache::{LayerKind, WINDOW_SLACK};
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

/// What one layer holds in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerCache {
    /// Keys and values of `elements` per position, for every position of the context or at
    /// most `rows` of them.
    Kv {
        /// Elements of one position (keys and values together).
        elements: u64,
        /// Most positions held (`None`: the whole context).
        rows: Option<u64>,
    },
    /// State of a fixed size whatever the context, in bytes (f32).
    Fixed(u64),
}

/// What a layer of `kind` holds, its positions being `elements` wide: the engine's own rule
/// for each kind of entry ([`crate::engine::cache::Cache`]).
pub fn layer_cache(kind: &LayerKind, elements: usize) -> LayerCache {
    let elements = elements as u64;
    match kind {
        LayerKind::Full => LayerCache::Kv {
            elements,
            rows: None,
        },
        // A window entry grows towards twice its window and slack, then reuses its rows.
        LayerKind::Window(w) => LayerCache::Kv {
            elements,
            rows: Some(2 * (*w as u64 + WINDOW_SLACK as u64)),
        },
        // One latent row per position; its `elements` are the family's latent width.
        LayerKind::Latent { .. } => LayerCache::Kv {
            elements,
            rows: None,
        },
        LayerKind::Shared(_) => LayerCache::Fixed(0),
        LayerKind::Recurrent(shapes) => LayerCache::Fixed(
            shapes
                .iter()
                .map(|s| s.iter().map(|&d| d as u64).product::<u64>() * 4)
                .sum(),
        ),
    }
}

impl KvShape {
    /// Every layer holding full KV of this shape (when the model cannot be built to say more).
    pub fn layers(&self) -> Vec<LayerCache> {
        let elements = self.kv_heads.saturating_mul(self.key_dim + self.value_dim);
        vec![
            LayerCache::Kv {
                elements,
                rows: None
            };
            self.layers.min(1 << 16) as usize
        ]
    }
}

/// The estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// The context size the estimate is for (`-c`, default as `run`'s).
    pub ctx_size: u64,
    /// Bytes of tensor data.
    pub weights: u64,
    /// The cache with keys and values in f16 at `ctx_size` (null when the dimensions are
    /// unknown); recurrent state included.
    pub kv_cache_f16: Option<u64>,
    /// The cache with keys and values in f32 at `ctx_size` (null when the dimensions are
    /// unknown); recurrent state included.
    pub kv_cache_f32: Option<u64>,
    /// Of the cache, the fixed-size recurrent and convolution state (null when unknown).
    pub recurrent_state: Option<u64>,
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

/// Estimates the memory for `weights` bytes and a cache of `layers` at `ctx` tokens.
pub fn estimate(weights: u64, layers: Option<&[LayerCache]>, ctx: u64, machine: Machine) -> Memory {
    let kv_bytes = |elem: u64| {
        layers?.iter().try_fold(0u64, |sum, l| {
            let bytes = match *l {
                LayerCache::Kv { elements, rows } => elements
                    .checked_mul(rows.map_or(ctx, |r| r.min(ctx)))?
                    .checked_mul(elem)?,
                LayerCache::Fixed(bytes) => bytes,
            };
            sum.checked_add(bytes)
        })
    };
    let recurrent_state = layers.map(|ls| {
        ls.iter()
            .map(|l| match l {
                LayerCache::Fixed(b) => *b,
                LayerCache::Kv { .. } => 0,
            })
            .fold(0, u64::saturating_add)
    });
    let (f16, f32) = (kv_bytes(2), kv_bytes(4));
    let total = |kv: Option<u64>| kv.and_then(|k| k.checked_add(weights));
    let (total_f16, total_f32) = (total(f16), total(f32));
    let fits = |total: Option<u64>, cap: Option<u64>| Some(total? <= cap?);
    Memory {
        ctx_size: ctx,
        weights,
        kv_cache_f16: f16,
        kv_cache_f32: f32,
        recurrent_state,
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
        let m = estimate(100, Some(&kv.layers()), 4096, machine);
        assert_eq!(m.kv_cache_f16, Some(30 * 3 * 128 * 4096 * 2));
        assert_eq!(m.kv_cache_f32, Some(30 * 3 * 128 * 4096 * 4));
        assert_eq!(m.total_f16, Some(30 * 3 * 128 * 4096 * 2 + 100));
        assert_eq!((m.fits_ram_f16, m.fits_ram_f32), (Some(true), Some(true)));
        assert_eq!(m.fits_gpu_f16, None);
        let tight = Machine {
            ram_total: Some(100 + 30 * 3 * 128 * 4096 * 3),
            ..Machine::default()
        };
        let m = estimate(100, Some(&kv.layers()), 4096, tight);
        assert_eq!((m.fits_ram_f16, m.fits_ram_f32), (Some(true), Some(false)));
    }

    #[test]
    fn windows_shared_kv_and_recurrent_state_do_not_grow_with_the_context() {
        let kinds = [
            LayerKind::Full,
            LayerKind::Window(128),
            LayerKind::Shared(0),
            LayerKind::Recurrent(vec![vec![1, 4, 3], vec![2, 8, 8]]),
        ];
        let layers: Vec<LayerCache> = kinds.iter().map(|k| layer_cache(k, 10)).collect();
        let at = |ctx| estimate(0, Some(&layers), ctx, Machine::default());
        let state = (12 + 128) * 4;
        let window_rows = 2 * (128 + WINDOW_SLACK as u64);
        assert_eq!(at(100).kv_cache_f32, Some(10 * 100 * 4 * 2 + state));
        assert_eq!(
            at(8192).kv_cache_f16,
            Some(10 * 8192 * 2 + 10 * window_rows * 2 + state)
        );
        assert_eq!(at(8192).recurrent_state, Some(state));
    }

    #[test]
    fn context_defaults_like_run() {
        assert_eq!(ctx_size(None, Some(8192)), 4096);
        assert_eq!(ctx_size(None, Some(2048)), 2048);
        assert_eq!(ctx_size(Some(0), Some(8192)), 8192);
        assert_eq!(ctx_size(Some(100), Some(8192)), 100);
    }
}
