//! The ggml tensor-type table: every type id GGUF files use, named, with block geometry and
//! whether this build can compute with it. Kept complete so unknown types are named, not guessed.

use candle_core::quantized::GgmlDType;

/// One row of the type table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    /// The id stored in the file.
    pub id: u32,
    /// ggml's name for it.
    pub name: &'static str,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// Candle's type when candle can load and compute with it (see also
    /// [`GgmlType::supported`]).
    pub candle: Option<GgmlDType>,
}

const fn row(
    id: u32,
    name: &'static str,
    block_size: usize,
    type_size: usize,
    candle: Option<GgmlDType>,
) -> GgmlType {
    GgmlType {
        id,
        name,
        block_size,
        type_size,
        candle,
    }
}

/// Every ggml type id in use by GGUF files (ids 4, 5, 31–33 and 36–38 were retired upstream).
pub static TYPES: &[GgmlType] = &[
    row(0, "F32", 1, 4, Some(GgmlDType::F32)),
    row(1, "F16", 1, 2, Some(GgmlDType::F16)),
    row(2, "Q4_0", 32, 18, Some(GgmlDType::Q4_0)),
    row(3, "Q4_1", 32, 20, Some(GgmlDType::Q4_1)),
    row(6, "Q5_0", 32, 22, Some(GgmlDType::Q5_0)),
    row(7, "Q5_1", 32, 24, Some(GgmlDType::Q5_1)),
    row(8, "Q8_0", 32, 34, Some(GgmlDType::Q8_0)),
    row(9, "Q8_1", 32, 36, Some(GgmlDType::Q8_1)),
    row(10, "Q2_K", 256, 84, Some(GgmlDType::Q2K)),
    row(11, "Q3_K", 256, 110, Some(GgmlDType::Q3K)),
    row(12, "Q4_K", 256, 144, Some(GgmlDType::Q4K)),
    row(13, "Q5_K", 256, 176, Some(GgmlDType::Q5K)),
    row(14, "Q6_K", 256, 210, Some(GgmlDType::Q6K)),
    row(15, "Q8_K", 256, 292, Some(GgmlDType::Q8K)),
    row(16, "IQ2_XXS", 256, 66, None),
    row(17, "IQ2_XS", 256, 74, None),
    row(18, "IQ3_XXS", 256, 98, None),
    row(19, "IQ1_S", 256, 50, None),
    row(20, "IQ4_NL", 32, 18, None),
    row(21, "IQ3_S", 256, 110, None),
    row(22, "IQ2_S", 256, 82, None),
    row(23, "IQ4_XS", 256, 136, None),
    row(24, "I8", 1, 1, None),
    row(25, "I16", 1, 2, None),
    row(26, "I32", 1, 4, None),
    row(27, "I64", 1, 8, None),
    row(28, "F64", 1, 8, None),
    row(29, "IQ1_M", 256, 56, None),
    row(30, "BF16", 1, 2, Some(GgmlDType::BF16)),
    row(34, "TQ1_0", 256, 54, None),
    row(35, "TQ2_0", 256, 66, None),
    row(39, "MXFP4", 32, 17, None),
];

/// Looks a type id up in the table.
pub fn by_id(id: u32) -> Option<&'static GgmlType> {
    TYPES.iter().find(|t| t.id == id)
}

/// The display name of a type id, `type#N` for ids outside the table.
pub fn name_of(id: u32) -> String {
    by_id(id).map_or_else(|| format!("type#{id}"), |t| t.name.to_string())
}

/// Comma-separated names of the types this build computes with.
pub fn supported_names() -> String {
    TYPES
        .iter()
        .filter(|t| t.supported())
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl GgmlType {
    /// Whether this build computes with the type: candle's types, and those of our own
    /// kernels ([`super::blocks::BlockType`]: MXFP4, IQ4_NL, IQ4_XS).
    pub fn supported(&self) -> bool {
        self.candle.is_some() || super::blocks::BlockType::from_id(self.id).is_some()
    }

    /// Bytes taken by `elements` values of this type, `None` when not a whole number of blocks
    /// or more than a `u64` counts.
    pub fn bytes_for(&self, elements: u64) -> Option<u64> {
        let bs = self.block_size as u64;
        if !elements.is_multiple_of(bs) {
            return None;
        }
        (elements / bs).checked_mul(self.type_size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_types_agree_with_the_table_geometry() {
        for t in TYPES {
            if let Some(c) = t.candle {
                assert_eq!(c.block_size(), t.block_size, "{}", t.name);
                assert_eq!(c.type_size(), t.type_size, "{}", t.name);
            }
        }
    }

    #[test]
    fn sizes_that_overflow_are_none_not_wrapped() {
        // Found by the gguf_header fuzz target: a tensor of u64::MAX / 2 F32 elements.
        let f32 = by_id(0).unwrap();
        assert_eq!(f32.bytes_for(u64::MAX / 2), None);
        assert_eq!(f32.bytes_for(1 << 60), Some(1 << 62));
    }

    #[test]
    fn unknown_ids_are_named_not_guessed() {
        assert_eq!(name_of(23), "IQ4_XS");
        assert_eq!(name_of(4), "type#4");
        assert!(by_id(39).is_some_and(|t| t.candle.is_none() && t.supported()));
        assert!(by_id(23).is_some_and(|t| t.candle.is_none() && t.supported()));
        assert!(by_id(16).is_some_and(|t| !t.supported()));
    }
}
