//! The KV cache, owned by the engine: one key/value buffer per layer that grows in steps up to
//! the context size, can be reset, and truncated to a prefix (for reuse across chat turns).
//!
//! On the CPU, f32 keys and values are rounded to f16 precision as they enter the cache (they
//! stay f32 in memory, so attention needs no conversion): llama.cpp's default cache holds f16,
//! and holding what it holds brings our logits closer to its reference outputs (first-step rms
//! difference over the vocabulary: SmolLM2 0.55 → 0.20, Gemma 3 0.23 → 0.21).

use candle_core::{DType, Tensor};

use crate::Result;

/// Smallest allocation, in positions, so short prompts do not reserve the whole context.
const MIN_CAPACITY: usize = 256;

/// Keys and values of one layer, shaped `(1, kv_heads, capacity, head_dim)`.
#[derive(Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerCache {
    /// Appends `k`, `v` (`(1, kv_heads, n, head_dim)`) and returns all cached keys and values
    /// (views of length `len + n`).
    pub fn append(&mut self, k: &Tensor, v: &Tensor, max_len: usize) -> Result<(Tensor, Tensor)> {
        let n = k.dim(2)?;
        let needed = self.len + n;
        if needed > max_len {
            return Err(candle_core::Error::msg(format!(
                "KV cache overflow: {needed} positions, capacity {max_len}"
            ))
            .into());
        }
        let k = f16_precision(&k.contiguous()?)?;
        let v = f16_precision(&v.contiguous()?)?;
        self.k = Some(Self::store(self.k.take(), &k, self.len, max_len)?);
        self.v = Some(Self::store(self.v.take(), &v, self.len, max_len)?);
        self.len = needed;
        let (Some(ks), Some(vs)) = (&self.k, &self.v) else {
            return Err(candle_core::Error::msg("KV cache buffers missing after store").into());
        };
        Ok((ks.narrow(2, 0, needed)?, vs.narrow(2, 0, needed)?))
    }

    /// Writes `new` at `len`, growing (doubling, capped at `max_len`) when needed.
    fn store(buf: Option<Tensor>, new: &Tensor, len: usize, max_len: usize) -> Result<Tensor> {
        let needed = len + new.dim(2)?;
        let buf = match buf {
            Some(b) if b.dim(2)? >= needed => b,
            old => {
                let cap = old.as_ref().map_or(Ok(0), |b| b.dim(2))?;
                let new_cap = needed.max((cap * 2).max(MIN_CAPACITY)).min(max_len);
                let (b, h, _, d) = new.dims4()?;
                let grown = Tensor::zeros((b, h, new_cap, d), new.dtype(), new.device())?;
                if let Some(old) = old.filter(|_| len > 0) {
                    grown.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                grown
            }
        };
        buf.slice_set(new, 2, len)?;
        Ok(buf)
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes reserved by this layer's buffers.
    pub fn reserved_bytes(&self) -> usize {
        [&self.k, &self.v]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// `t` rounded to f16 precision, when it is f32 on the CPU (on a GPU the two conversions would
/// be two more kernel launches per layer and token, where launches are the bottleneck).
fn f16_precision(t: &Tensor) -> Result<Tensor> {
    Ok(match t.dtype() {
        DType::F32 if t.device().is_cpu() => t.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
        _ => t.clone(),
    })
}

/// The cache of a whole model.
pub struct KvCache {
    layers: Vec<LayerCache>,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers holding at most `max_len` positions.
    pub fn new(n_layers: usize, max_len: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerCache::default()).collect(),
            max_len,
        }
    }

    /// The position where the next token goes.
    pub fn pos(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Positions cached in layer `i` (before a forward pass appends to it, the position of
    /// the first new token).
    pub fn pos_of(&self, i: usize) -> usize {
        self.layers.get(i).map_or(0, LayerCache::len)
    }

    /// The most positions this cache holds.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.max_len - self.pos()
    }

    /// Appends to layer `i` (see [`LayerCache::append`]).
    pub fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let max_len = self.max_len;
        match self.layers.get_mut(i) {
            Some(l) => l.append(k, v, max_len),
            None => Err(candle_core::Error::msg(format!("KV cache has no layer {i}")).into()),
        }
    }

    /// Forgets everything (buffers are kept for reuse).
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.layers {
            l.len = l.len.min(len);
        }
    }

    /// Bytes reserved by all layers.
    pub fn reserved_bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::reserved_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn kv(start: f32, n: usize) -> Tensor {
        Tensor::arange(start, start + (n * 2 * 4) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, n, 4))
            .unwrap()
    }

    #[test]
    fn appends_grow_and_keep_earlier_positions() {
        let mut c = KvCache::new(1, 1000);
        let a = kv(0.0, 3);
        c.append(0, &a, &a).unwrap();
        for step in 0..300 {
            let b = kv(step as f32, 1);
            let (k, _) = c.append(0, &b, &b).unwrap();
            assert_eq!(k.dim(2).unwrap(), 4 + step);
        }
        let (k, _) = c.append(0, &kv(0.0, 1), &kv(0.0, 1)).unwrap();
        let first = k.i((.., .., 0..3, ..)).unwrap();
        let diff = (first - &a).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn f32_values_are_stored_at_f16_precision() {
        let mut c = KvCache::new(1, 10);
        let x = Tensor::from_vec(
            vec![1.0001f32, 0.1, -3.3, 65504.0],
            (1, 1, 1, 4),
            &Device::Cpu,
        )
        .unwrap();
        let (k, _) = c.append(0, &x, &x).unwrap();
        let got: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = [1.0001f32, 0.1, -3.3, 65504.0]
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[0], 1.0);
    }

    #[test]
    fn truncate_and_overflow() {
        let mut c = KvCache::new(2, 5);
        for l in 0..2 {
            c.append(l, &kv(0.0, 4), &kv(0.0, 4)).unwrap();
        }
        assert_eq!(c.pos(), 4);
        c.truncate(2);
        assert_eq!(c.pos(), 2);
        assert!(c.append(0, &kv(0.0, 4), &kv(0.0, 4)).is_err());
        c.reset();
        assert_eq!(c.pos(), 0);
    }
}
