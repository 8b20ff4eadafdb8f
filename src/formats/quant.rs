//! What `--quant` asks for: the types weights are quantized to at load time, their
//! command-line names, and which type a tensor of a given shape gets.

use candle_core::quantized::GgmlDType;

use crate::{Error, Result};

/// A type weights are quantized to at load time (`--quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// One of candle's ggml types, for every weight.
    Ggml(GgmlDType),
    /// MXFP4 for linear weights whose rows are whole blocks of 32 (computed by our CPU
    /// kernels, as llama.cpp's `quantize_row_mxfp4_ref` rounds); Q8_0 for the embedding table,
    /// which candle looks rows up in.
    Mxfp4,
}

impl From<GgmlDType> for Quant {
    fn from(t: GgmlDType) -> Self {
        Self::Ggml(t)
    }
}

impl Quant {
    /// The ggml type of tables and other tensors read whole (`Vb::qtensor`).
    pub(crate) fn table_type(self) -> GgmlDType {
        match self {
            Self::Ggml(t) => t,
            Self::Mxfp4 => GgmlDType::Q8_0,
        }
    }
}

/// The quantization types `--quant` accepts, by their command-line names.
pub const QUANT_TYPES: &[(&str, Quant)] = &[
    ("q4_0", Quant::Ggml(GgmlDType::Q4_0)),
    ("q4_1", Quant::Ggml(GgmlDType::Q4_1)),
    ("q5_0", Quant::Ggml(GgmlDType::Q5_0)),
    ("q5_1", Quant::Ggml(GgmlDType::Q5_1)),
    ("q8_0", Quant::Ggml(GgmlDType::Q8_0)),
    ("q2k", Quant::Ggml(GgmlDType::Q2K)),
    ("q3k", Quant::Ggml(GgmlDType::Q3K)),
    ("q4k", Quant::Ggml(GgmlDType::Q4K)),
    ("q5k", Quant::Ggml(GgmlDType::Q5K)),
    ("q6k", Quant::Ggml(GgmlDType::Q6K)),
    ("mxfp4", Quant::Mxfp4),
];

/// Parses a `--quant` name (case-insensitive; `q4_k` and `q4k` both work).
pub fn parse_quant(name: &str) -> Result<Quant> {
    let norm = name.to_ascii_lowercase().replace("_k", "k");
    QUANT_TYPES
        .iter()
        .find(|(n, _)| *n == norm || n.replace('_', "") == norm.replace('_', ""))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown quantization type '{name}'; supported: {}",
                QUANT_TYPES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The type a tensor of `dims` is quantized to when `q` is asked for: `q` when its rows split
/// into `q`'s blocks; else, for the 256-wide k-quants, llama.cpp's fallback of the same
/// quality on 32-wide blocks (Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0);
/// `None` (kept dense) for vectors or rows that fit neither.
pub(crate) fn quant_for(dims: &[usize], q: GgmlDType) -> Option<GgmlDType> {
    let [_, cols] = dims else { return None };
    if cols % q.block_size() == 0 {
        return Some(q);
    }
    let fallback = match q {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => return None,
    };
    (cols % fallback.block_size() == 0).then_some(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quants_fall_back_to_32_wide_blocks_like_llama_cpp() {
        assert_eq!(quant_for(&[64, 512], GgmlDType::Q4K), Some(GgmlDType::Q4K));
        assert_eq!(quant_for(&[64, 576], GgmlDType::Q4K), Some(GgmlDType::Q5_0));
        assert_eq!(quant_for(&[64, 576], GgmlDType::Q6K), Some(GgmlDType::Q8_0));
        assert_eq!(
            quant_for(&[64, 576], GgmlDType::Q8_0),
            Some(GgmlDType::Q8_0)
        );
        assert_eq!(quant_for(&[64, 100], GgmlDType::Q4K), None);
        assert_eq!(quant_for(&[576], GgmlDType::Q8_0), None);
        assert_eq!(parse_quant("Q4_K").unwrap(), Quant::Ggml(GgmlDType::Q4K));
        assert_eq!(parse_quant("q8_0").unwrap(), Quant::Ggml(GgmlDType::Q8_0));
        assert_eq!(parse_quant("MXFP4").unwrap(), Quant::Mxfp4);
        assert!(parse_quant("q3_m").is_err());
    }
}
