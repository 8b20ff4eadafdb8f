//! The tensor table: one row per tensor (name, shape, dtype, bytes, offset) in the file's own
//! convention, and the compact view that folds the per-block tensors of equal shape and type
//! into one row (`blk.{0..29}.attn_q.weight  [576, 576]  Q4_1  ×30`).

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde::Serialize;

use super::Model;
use crate::formats::ggml_types;

/// One tensor as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tensor {
    /// Name in the file.
    pub name: String,
    /// Shape in the file's convention: GGUF `ne[]` (fastest-varying first), safetensors
    /// outermost first.
    pub shape: Vec<u64>,
    /// Storage type (`Q4_1`, `F32`, `IQ4_XS`, `BF16`, `type#99` for ids no table knows).
    pub dtype: String,
    /// Whether this build can compute with the type.
    pub supported: bool,
    /// Number of elements (null when it overflows).
    pub elements: Option<u64>,
    /// Bytes of data (null when the type's size is unknown).
    pub bytes: Option<u64>,
    /// Absolute offset of the data in its file.
    pub offset: u64,
    /// The shard file holding it (safetensors), null for GGUF.
    pub file: Option<String>,
    /// Why the data cannot be read (past the end of the file, partial block), null when fine.
    pub problem: Option<String>,
}

/// A published checkpoint's MXFP4 blocks or scales (gpt-oss: `*_blocks`, `*_scales`, stored
/// as bytes), which the loader reads (see [`crate::formats::mxfp4`]).
fn is_mxfp4_part(name: &str) -> bool {
    name.ends_with("_blocks") || name.ends_with("_scales")
}

/// Every tensor of the model, in file (and shard) order.
pub fn list(model: &Model) -> Vec<Tensor> {
    match model {
        Model::Gguf { header, .. } => header
            .tensors
            .iter()
            .map(|t| {
                let ty = ggml_types::by_id(t.type_id);
                Tensor {
                    name: t.name.clone(),
                    shape: t.dims.clone(),
                    dtype: ggml_types::name_of(t.type_id),
                    supported: ty.is_some_and(|ty| ty.supported()),
                    elements: t.elements(),
                    bytes: header.tensor_bytes(t),
                    offset: header.data_offset.saturating_add(t.offset),
                    file: None,
                    problem: header.extent(t).err(),
                }
            })
            .collect(),
        Model::Safetensors { checkpoint, .. } => {
            let names: HashSet<&str> = checkpoint.tensors().map(|(_, t)| t.name.as_str()).collect();
            // An FP8 weight's block scales (see [`crate::formats::fp8`]).
            let has_scales = |name: &str| names.contains(format!("{name}_scale_inv").as_str());
            checkpoint
                .tensors()
                .map(|(shard, t)| Tensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype: t.dtype.clone(),
                    supported: matches!(t.dtype.as_str(), "F32" | "F16" | "BF16")
                    || (t.dtype == "U8" && is_mxfp4_part(&t.name))
                    // FP8 weights with their block scales; whether config.json declares the
                    // blocks is the load check's to say.
                    || (t.dtype == "F8_E4M3" && has_scales(&t.name)),
                    elements: t.elements(),
                    bytes: Some(t.end.saturating_sub(t.start)),
                    offset: shard.header.data_offset.saturating_add(t.start),
                    file: shard
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned()),
                    problem: shard.header.extent(t).err(),
                })
                .collect()
        }
    }
}

/// The tensors whose names match `pattern` (all of them without one).
pub fn filter(tensors: Vec<Tensor>, pattern: Option<&Regex>) -> Vec<Tensor> {
    match pattern {
        Some(re) => tensors
            .into_iter()
            .filter(|t| re.is_match(&t.name))
            .collect(),
        None => tensors,
    }
}

/// Tensors that differ only in their block index, folded into one row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// The name with the block index folded: `blk.{0..29}.attn_q.weight`, or the plain name.
    pub name: String,
    /// The name with `{}` for the block index (the plain name outside blocks).
    pub pattern: String,
    /// Block indices, in file order (empty outside blocks).
    pub blocks: Vec<u64>,
    /// The shared shape.
    pub shape: Vec<u64>,
    /// The shared dtype.
    pub dtype: String,
    /// Whether this build can compute with the dtype.
    pub supported: bool,
    /// Number of tensors.
    pub count: usize,
    /// Total bytes (null when a size is unknown).
    pub bytes: Option<u64>,
}

/// Splits `blk.7.attn_q.weight` into (`blk.{}.attn_q.weight`, 7) at the first numeric segment.
fn block_pattern(name: &str) -> Option<(String, u64)> {
    let mut parts: Vec<&str> = name.split('.').collect();
    let i = parts
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let index = parts[i].parse().ok()?;
    parts[i] = "{}";
    Some((parts.join("."), index))
}

/// Folds tensors of equal pattern, shape and dtype; groups keep the order of first appearance.
pub fn group(tensors: &[Tensor]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(String, Vec<u64>, String), usize> = HashMap::new();
    for t in tensors {
        let (pattern, block) = match block_pattern(&t.name) {
            Some((p, b)) => (p, Some(b)),
            None => (t.name.clone(), None),
        };
        let key = (pattern.clone(), t.shape.clone(), t.dtype.clone());
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                name: String::new(),
                pattern,
                blocks: Vec::new(),
                shape: t.shape.clone(),
                dtype: t.dtype.clone(),
                supported: t.supported,
                count: 0,
                bytes: Some(0),
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.blocks.extend(block);
        g.count += 1;
        g.bytes = g.bytes.zip(t.bytes).map(|(a, b)| a.saturating_add(b));
    }
    for g in &mut groups {
        g.name = match g.blocks.as_slice() {
            [] => g.pattern.clone(),
            [one] => g.pattern.replacen("{}", &one.to_string(), 1),
            blocks => g
                .pattern
                .replacen("{}", &format!("{{{}}}", ranges(blocks)), 1),
        };
    }
    groups
}

/// `0..29` for a run, `0,3,6..8` otherwise; a single index stays as it is.
fn ranges(indices: &[u64]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j].checked_add(1) == Some(sorted[j + 1]) {
            j += 1;
        }
        parts.push(match j - i {
            0 => sorted[i].to_string(),
            1 => format!("{},{}", sorted[i], sorted[j]),
            _ => format!("{}..{}", sorted[i], sorted[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[u64], dtype: &str, bytes: u64) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: dtype.into(),
            supported: true,
            elements: Some(shape.iter().product()),
            bytes: Some(bytes),
            offset: 0,
            file: None,
            problem: None,
        }
    }

    #[test]
    fn blocks_fold_into_ranges_per_shape_and_type() {
        let mut all = vec![t("token_embd.weight", &[8, 4], "Q8_0", 10)];
        for i in 0..30 {
            all.push(t(&format!("blk.{i}.attn_q.weight"), &[576, 576], "Q4_1", 2));
            let ty = if i % 3 == 0 { "Q6_K" } else { "Q4_K" };
            all.push(t(&format!("blk.{i}.ffn_down.weight"), &[4, 4], ty, 1));
        }
        let g = group(&all);
        let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "token_embd.weight",
                "blk.{0..29}.attn_q.weight",
                "blk.{0,3,6,9,12,15,18,21,24,27}.ffn_down.weight",
                "blk.{1,2,4,5,7,8,10,11,13,14,16,17,19,20,22,23,25,26,28,29}.ffn_down.weight",
            ]
        );
        assert_eq!((g[1].count, g[1].bytes), (30, Some(60)));
        let single = group(&[t("blk.7.attn_q.weight", &[2], "F32", 8)]);
        assert_eq!(single[0].name, "blk.7.attn_q.weight");
    }

    #[test]
    fn hugging_face_layer_names_fold_too() {
        let all = [
            t("model.layers.0.mlp.up_proj.weight", &[2, 2], "BF16", 8),
            t("model.layers.1.mlp.up_proj.weight", &[2, 2], "BF16", 8),
            t("model.layers.2.mlp.up_proj.weight", &[2, 2], "BF16", 8),
        ];
        assert_eq!(
            group(&all)[0].name,
            "model.layers.{0..2}.mlp.up_proj.weight"
        );
    }

    #[test]
    fn runs_of_two_are_listed_not_ranged() {
        assert_eq!(ranges(&[5, 6, 9]), "5,6,9");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(ranges(&[0, 1, 2, 7, 8, 9, 10]), "0..2,7..10");
        assert_eq!(
            ranges(&[u64::MAX - 1, u64::MAX]),
            format!("{},{}", u64::MAX - 1, u64::MAX)
        );
    }
}
