//! FP8 block-scaled weights, as DeepSeek, GLM and Qwen publish them: a safetensors `F8_E4M3`
//! `weight` and beside it `weight_scale_inv`, one f32 per block of `weight_block_size` =
//! `[rows, cols]` (`quantization_config: {quant_method: fp8, weight_block_size: [128, 128]}`).
//! A weight is `e4m3(byte) · scale[row / rows][col / cols]`; a matrix whose dimensions are not
//! whole blocks has partial blocks at its ends, each with its own scale (transformers'
//! `FP8Linear`: `ceil(out / rows) × ceil(in / cols)` scales).
//!
//! [`Fp8`] keeps the bytes (1 per weight) and the scales; the products are
//! [`crate::kernels::cpu::fp8`]. [`Scheme`] reads and checks `quantization_config`.
//!
//! References: transformers `integrations/finegrained_fp8.py` (`FP8Linear`,
//! `_dequantize_fp8_weight`); OCP 8-bit floating point (E4M3: bias 7, no infinities,
//! `S.1111.111` is NaN).

use std::sync::Arc;

use super::hf_config::HfConfig;
use crate::{Error, Result};

/// The value of an E4M3 (`e4m3fn`) byte, by bit arithmetic: the sign, exponent and mantissa
/// moved into an f32's places (`e` biased by 7 rather than 127, the mantissa's three bits on
/// top) and scaled by `2^120`, which is exact for normal and subnormal values alike. The NaN
/// codes (`0x7F`, `0xFF`) come out as ±480; published weights hold none.
#[inline(always)]
pub fn e4m3_to_f32(b: u8) -> f32 {
    let bits = ((b as u32 & 0x80) << 24) | ((b as u32 & 0x7F) << 20);
    f32::from_bits(bits) * TWO_TO_120
}

/// `2^120`: the exponent bias of f32 (127) less E4M3's (7).
pub const TWO_TO_120: f32 = f32::from_bits((127 + 120) << 23);

/// The FP8 scheme of a checkpoint, from its `quantization_config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// `weight_block_size`: rows and columns of the block each scale covers.
    pub block: [usize; 2],
}

/// What `quantization_config` may say, for error messages.
const SUPPORTED_METHODS: &str = "\"fp8\" (F8_E4M3 weights with weight_scale_inv blocks), \
                                 \"mxfp4\" (gpt-oss experts as *_blocks and *_scales)";

impl Scheme {
    /// The FP8 scheme `config.json` declares: `None` without `quantization_config` or for
    /// `mxfp4` (which the gpt-oss family reads itself); every other method, and FP8 variants
    /// this build does not run (E5M2, static activation scales, no block size), refused.
    pub fn from_config(h: &HfConfig) -> Result<Option<Self>> {
        let Some(q) = h.sub("quantization_config") else {
            return Ok(None);
        };
        let origin = h.origin();
        let refused = |key: &str, value: String, supported: &str| {
            Error::UnsupportedConfig(format!(
                "{origin}: quantization_config.{key} = {value} is not supported; supported: \
                 {supported}"
            ))
        };
        match q.opt_str("quant_method")? {
            Some("fp8") => {}
            Some("mxfp4") => return Ok(None),
            other => {
                let found = other.map_or("null".into(), |m| format!("\"{m}\""));
                return Err(refused("quant_method", found, SUPPORTED_METHODS));
            }
        }
        if let Some(fmt) = q.opt_str("fmt")? {
            if fmt != "e4m3" {
                return Err(refused("fmt", format!("\"{fmt}\""), "\"e4m3\""));
            }
        }
        if let Some(scheme) = q.opt_str("activation_scheme")? {
            if scheme != "dynamic" {
                let why =
                    "\"dynamic\" (activations stay f32 here; static input scales are not read)";
                return Err(refused("activation_scheme", format!("\"{scheme}\""), why));
            }
        }
        let block = q.get("weight_block_size");
        let sizes: Option<Vec<usize>> = block.and_then(|b| b.as_array()).and_then(|a| {
            a.iter()
                .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect()
        });
        match sizes.as_deref() {
            Some(&[rows, cols]) if rows > 0 && cols > 0 => Ok(Some(Self {
                block: [rows, cols],
            })),
            _ => Err(refused(
                "weight_block_size",
                block.map_or("null".into(), |b| b.to_string()),
                "two positive sizes [rows, cols] of the blocks each scale covers, e.g. \
                 [128, 128] (per-tensor FP8 is not read)",
            )),
        }
    }

    /// The shape of the scales of a weight of `shape` (`(…, rows, cols)`): `(…, ceil(rows /
    /// block rows), ceil(cols / block cols))`.
    pub fn scale_shape(&self, shape: &[usize]) -> Option<Vec<usize>> {
        let (&cols, rest) = shape.split_last()?;
        let (&rows, outer) = rest.split_last()?;
        let mut s = outer.to_vec();
        s.extend([rows.div_ceil(self.block[0]), cols.div_ceil(self.block[1])]);
        Some(s)
    }
}

/// Every value of FP8 `values` of `shape` (`(…, rows, cols)`) times its block's scale, in f32.
pub fn dequantize(values: &[u8], scales: &[f32], shape: &[usize], scheme: Scheme) -> Vec<f32> {
    let (rows, cols) = match shape {
        [.., r, c] => (*r, *c),
        _ => (1, values.len()),
    };
    let [br, bc] = scheme.block;
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let matrix = (rows * cols).max(1);
    values
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let (m, r, c) = (i / matrix, i % matrix / cols, i % cols);
            e4m3_to_f32(b) * scales[m * sr * sc + r / br * sc + c / bc]
        })
        .collect()
}

/// An FP8 block-scaled matrix `(rows, cols)`: its bytes, row after row, and its scales,
/// `ceil(rows / block rows) × ceil(cols / block cols)` row after row.
#[derive(Clone)]
pub struct Fp8 {
    values: Arc<[u8]>,
    scales: Arc<[f32]>,
    rows: usize,
    cols: usize,
    scheme: Scheme,
}

impl std::fmt::Debug for Fp8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fp8([{}, {}], block {:?})",
            self.rows, self.cols, self.scheme.block
        )
    }
}

impl Fp8 {
    /// A matrix of `rows × cols` bytes and its scales, which must be as many as its blocks.
    pub fn new(
        values: Vec<u8>,
        scales: Vec<f32>,
        (rows, cols): (usize, usize),
        scheme: Scheme,
    ) -> Result<Self> {
        let want = scheme
            .scale_shape(&[rows, cols])
            .map(|s| s.iter().product::<usize>());
        if values.len() != rows * cols || want != Some(scales.len()) {
            return Err(Error::Internal(format!(
                "FP8 matrix of {rows} × {cols} in blocks of {:?}: {} bytes and {} scales",
                scheme.block,
                values.len(),
                scales.len()
            )));
        }
        Ok(Self {
            values: values.into(),
            scales: scales.into(),
            rows,
            cols,
            scheme,
        })
    }

    /// `values` (`rows × cols`, f32) rounded to FP8 with one scale per block, `max |x| / 448`
    /// (448 being E4M3's largest value), as FP8 checkpoints are made; for tests and tools.
    pub fn quantize(values: &[f32], (rows, cols): (usize, usize), scheme: Scheme) -> Result<Self> {
        let [br, bc] = scheme.block;
        let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
        let mut scales = vec![0f32; sr * sc];
        for (i, v) in values.iter().enumerate().take(rows * cols) {
            let s = &mut scales[i / cols / br * sc + i % cols / bc];
            *s = s.max(v.abs() / 448.0);
        }
        let bytes = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = scales[i / cols.max(1) / br * sc + i % cols.max(1) / bc];
                nearest(if s > 0.0 { v / s } else { 0.0 })
            })
            .collect();
        Self::new(bytes, scales, (rows, cols), scheme)
    }

    /// Matrices stacked row-wise (their rows in order), when they share a width and a block
    /// size and every part but the last is whole blocks of rows (so that each block of the
    /// stack has one scale): `None` otherwise.
    pub fn stack_rows(parts: &[&Self]) -> Option<Self> {
        let (first, rest) = parts.split_first()?;
        let (cols, scheme) = (first.cols, first.scheme);
        let fits = |p: &Self| p.cols == cols && p.scheme == scheme;
        let (_, before_last) = parts.split_last()?;
        if !rest.iter().all(|p| fits(p))
            || before_last.iter().any(|p| p.rows % scheme.block[0] != 0)
        {
            return None;
        }
        let values: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.values.iter().copied())
            .collect();
        let scales: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect();
        let rows = parts.iter().map(|p| p.rows).sum();
        Self::new(values, scales, (rows, cols), scheme).ok()
    }

    /// `(rows, cols)`.
    pub fn dims2(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The block size.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The bytes, row after row.
    pub fn values(&self) -> &[u8] {
        &self.values
    }

    /// The scales, one per block, row of blocks after row of blocks.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Every weight in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize(
            &self.values,
            &self.scales,
            &[self.rows, self.cols],
            self.scheme,
        )
    }
}

/// The E4M3 byte nearest `x` (ties to the even code), saturating at ±448.
fn nearest(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs().min(448.0);
    // The codes' values grow with the code: a binary search over the 127 non-negative ones.
    let (mut lo, mut hi) = (0u8, 0x7E);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if e4m3_to_f32(mid) <= a {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (dl, dh) = (a - e4m3_to_f32(lo), e4m3_to_f32(hi) - a);
    let code = if dl < dh || (dl == dh && lo % 2 == 0) {
        lo
    } else {
        hi
    };
    code | sign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> HfConfig {
        HfConfig::from_map(serde_json::from_str(json).unwrap(), "config.json")
    }

    #[test]
    fn e4m3_bytes_decode_to_their_values() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0); // e = 7, m = 0
        assert_eq!(e4m3_to_f32(0xB8), -1.0);
        assert_eq!(e4m3_to_f32(0x3C), 1.5);
        assert_eq!(e4m3_to_f32(0x7E), 448.0); // the largest
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6)); // the smallest normal
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9)); // the smallest subnormal
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
    }

    #[test]
    fn rounding_to_e4m3_picks_the_nearest_code() {
        for b in 0..=0x7Eu8 {
            assert_eq!(nearest(e4m3_to_f32(b)), b, "code {b:#x}");
            assert_eq!(nearest(-e4m3_to_f32(b)), b | 0x80, "code {b:#x}");
        }
        assert_eq!(nearest(1.0 + 1.0 / 16.0), 0x38); // halfway: the even code (1.0)
        assert_eq!(nearest(1.2), 0x3A); // 1.25
        assert_eq!(nearest(1e6), 0x7E);
    }

    #[test]
    fn partial_blocks_have_their_own_scales() {
        // 3 × 5 in blocks of 2 × 4: scales 2 × 2, the last row and column blocks partial.
        let scheme = Scheme { block: [2, 4] };
        assert_eq!(scheme.scale_shape(&[3, 5]), Some(vec![2, 2]));
        assert_eq!(scheme.scale_shape(&[7, 3, 5]), Some(vec![7, 2, 2]));
        let values = vec![0x38u8; 15]; // all 1.0
        let scales = [1.0, 2.0, 3.0, 4.0];
        let d = dequantize(&values, &scales, &[3, 5], scheme);
        #[rustfmt::skip]
        assert_eq!(d, [1., 1., 1., 1., 2.,
                       1., 1., 1., 1., 2.,
                       3., 3., 3., 3., 4.]);
        let m = Fp8::quantize(&d, (3, 5), scheme).unwrap();
        assert_eq!(m.dequantize(), d);
        assert!(Fp8::new(values, vec![1.0; 3], (3, 5), scheme).is_err());
        // Stacked under a part of whole row blocks: the rows and scales in order.
        let top = Fp8::quantize(&[0.5; 10], (2, 5), scheme).unwrap();
        let both = Fp8::stack_rows(&[&top, &m]).unwrap();
        assert_eq!(both.dims2(), (5, 5));
        assert_eq!(both.dequantize(), [vec![0.5; 10], d.clone()].concat());
        // A part of partial row blocks first, another width, another block size: apart.
        assert!(Fp8::stack_rows(&[&m, &top]).is_none());
        let wide = Fp8::quantize(&[1.0; 12], (2, 6), scheme).unwrap();
        assert!(Fp8::stack_rows(&[&top, &wide]).is_none());
        let other = Fp8::quantize(&d, (3, 5), Scheme { block: [1, 4] }).unwrap();
        assert!(Fp8::stack_rows(&[&top, &other]).is_none());
    }

    #[test]
    fn quantization_config_is_read_and_other_schemes_refused() {
        let fp8 = config(
            r#"{"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}"#,
        );
        assert_eq!(
            Scheme::from_config(&fp8).unwrap(),
            Some(Scheme { block: [128, 128] })
        );
        assert_eq!(Scheme::from_config(&config("{}")).unwrap(), None);
        let mx = config(r#"{"quantization_config": {"quant_method": "mxfp4"}}"#);
        assert_eq!(Scheme::from_config(&mx).unwrap(), None);
        for (json, says) in [
            (r#"{"quant_method": "gptq"}"#, "quant_method = \"gptq\""),
            (
                r#"{"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}"#,
                "fmt = \"e5m2\"",
            ),
            (
                r#"{"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]}"#,
                "activation_scheme = \"static\"",
            ),
            (r#"{"quant_method": "fp8"}"#, "weight_block_size = null"),
            (
                r#"{"quant_method": "fp8", "weight_block_size": [128]}"#,
                "weight_block_size = [128]",
            ),
        ] {
            let h = config(&format!(r#"{{"quantization_config": {json}}}"#));
            let e = Scheme::from_config(&h).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("supported: "), "{e}");
        }
    }
}
