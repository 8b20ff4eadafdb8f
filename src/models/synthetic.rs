//! Random-weight models of any size for any registered family: the tensor list and shapes a
//! family's loader expects (from its GGUF block-tensor names), the metadata its config reader
//! needs, and quantized tensors of any type filled with random blocks. Used by the tiny
//! conformance models ([`super::testing`]) and by `bench --synthetic`.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::FamilySpec;
use crate::formats::blocks::{BlockType, Blocks};
use crate::formats::gguf::MemoryTensor;
use crate::{Error, Result};

/// The dimensions of a decoder-only model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Blocks.
    pub layers: usize,
    /// Model width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP width.
    pub ffn: usize,
    /// Vocabulary (rows of the embedding and output matrices).
    pub vocab: usize,
    /// Trained context length.
    pub context: usize,
}

/// What a tensor is for, which decides its type in a quantization mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `token_embd.weight` of a model with a separate output matrix.
    Embedding,
    /// `output.weight`, or the embedding of a model with tied embeddings (it serves as both).
    Output,
    /// A block's value projection (`attn_v.weight`), given more bits by some llama.cpp mixes.
    AttnV,
    /// A block's MLP down projection (`ffn_down.weight`, `ffn_down_exps.weight`), idem.
    FfnDown,
    /// A mixture-of-experts router (`ffn_gate_inp.weight`), kept in F32 as llama.cpp does.
    Router,
    /// Any other matrix.
    Matrix,
    /// Norm weights, biases and other vectors (kept in F32, as llama.cpp does).
    Vector,
}

/// One tensor of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// GGUF name.
    pub name: String,
    /// Shape in candle's order (outermost first).
    pub shape: Vec<usize>,
    /// What it is for.
    pub role: Role,
    /// Its block, for block tensors.
    pub layer: Option<usize>,
}

/// Prefix of [`super::TinyConfig::metadata`] keys that only shape synthetic tensors and are
/// not written to the file (`synthetic.qk_norm_whole` 1: Q/K norms span every head, OLMo).
pub const HINT_PREFIX: &str = "synthetic.";

/// What block shapes depend on beyond [`Dims`]: the family's layout and its extra metadata.
#[derive(Clone, Copy, Debug)]
pub struct Layout<'a> {
    /// `ffn_up.weight` stacks gate and up (`2 × ffn` rows).
    pub fused_gate_up: bool,
    /// `{arch}.{key}` integers: `expert_count`, `expert_feed_forward_length` (else the dense
    /// `feed_forward_length` is the experts' width, as in llama.cpp's Mixtral files).
    pub metadata: &'a [(&'a str, u32)],
}

impl Layout<'_> {
    fn get(&self, key: &str) -> Option<usize> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v as usize)
    }

    /// A hybrid model (Qwen3.5, Qwen3-Next: `full_attention_interval` in the metadata)
    /// has recurrent layers, all but every `full_attention_interval`-th.
    fn hybrid(&self) -> Option<usize> {
        self.get("full_attention_interval").map(|n| n.max(1))
    }

    /// Whether block `layer` of `n_layers` holds the tensor `suffix`. In a hybrid model,
    /// recurrent layers hold the `ssm_*`, `attn_qkv` and `attn_gate` tensors and attention
    /// layers the other `attn_*` ones (llama.cpp's names for Qwen3.5). Otherwise every block
    /// holds every tensor, except where the metadata says a block has none: per-layer input
    /// tensors without `embedding_length_per_layer_input`, expert tensors without
    /// `expert_count`, keys and values in the last `attention.shared_kv_layers` blocks
    /// (they read an earlier block's), and values on full-attention blocks with
    /// `synthetic.global_k_eq_v` (their keys serve as values; Gemma 4).
    pub fn in_layer(&self, suffix: &str, layer: usize, n_layers: usize) -> bool {
        let Some(every) = self.hybrid() else {
            return self.in_uniform_layer(suffix, layer, n_layers);
        };
        let recurrent = !(layer + 1).is_multiple_of(every);
        let recurrent_only = suffix.starts_with("ssm_")
            || suffix.starts_with("attn_qkv.")
            || suffix.starts_with("attn_gate.");
        let attention_only =
            !recurrent_only && suffix.starts_with("attn_") && suffix != "attn_norm.weight";
        match recurrent {
            true => !attention_only,
            false => !recurrent_only,
        }
    }

    fn in_uniform_layer(&self, suffix: &str, layer: usize, n_layers: usize) -> bool {
        let positive = |key: &str| self.get(key).is_some_and(|n| n > 0);
        // DeepSeek's leading dense blocks: a dense MLP before them, experts after.
        if let Some(lead) = self.get("leading_dense_block_count") {
            let expert = suffix.starts_with("ffn_gate_inp")
                || suffix.contains("_exps.")
                || suffix.contains("_shexp.")
                || suffix == "exp_probs_b.bias";
            let dense = matches!(
                suffix,
                "ffn_gate.weight" | "ffn_up.weight" | "ffn_down.weight"
            );
            if (expert && layer < lead) || (dense && layer >= lead) {
                return false;
            }
        }
        // Multi-head latent attention: a low-rank query with `q_lora_rank`, else a plain one;
        // the selection bias of DeepSeek-V3's sigmoid router.
        if self.get("attention.kv_lora_rank").is_some() {
            let low_rank = positive("attention.q_lora_rank");
            match suffix {
                "attn_q.weight" => return !low_rank,
                "attn_q_a.weight" | "attn_q_a_norm.weight" | "attn_q_b.weight" => return low_rank,
                "exp_probs_b.bias" => return self.get("expert_gating_func") == Some(2),
                _ => {}
            }
        }
        match suffix {
            "inp_gate.weight" | "proj.weight" | "post_norm.weight" => {
                positive("embedding_length_per_layer_input")
            }
            "ffn_gate_inp.weight"
            | "ffn_gate_inp.scale"
            | "ffn_gate_exps.weight"
            | "ffn_up_exps.weight"
            | "ffn_gate_up_exps.weight"
            | "ffn_down_exps.weight"
            | "ffn_down_exps.scale"
            | "pre_ffw_norm_2.weight"
            | "post_ffw_norm_1.weight"
            | "post_ffw_norm_2.weight" => positive("expert_count"),
            "attn_k.weight" | "attn_k_norm.weight" if self.shares_kv(layer, n_layers) => false,
            "attn_v.weight" => {
                let keys_as_values =
                    positive("synthetic.global_k_eq_v") && !self.sliding(layer, n_layers);
                !self.shares_kv(layer, n_layers) && !keys_as_values
            }
            _ => true,
        }
    }

    /// Whether block `layer` of `n_layers` is a sliding-window one, in a model whose layer
    /// types `synthetic.swa_period` sets (every block but each period-th and the last, as
    /// transformers' Gemma 4 lays them out); false in any other model.
    pub fn sliding(&self, layer: usize, n_layers: usize) -> bool {
        self.get("synthetic.swa_period")
            .is_some_and(|p| layer + 1 != n_layers && !(layer + 1).is_multiple_of(p.max(1)))
    }

    /// How many of `n_layers` blocks read an earlier block's keys and values: the last
    /// `attention.shared_kv_layers`, but never the first period of layer types (a model cut
    /// to a few blocks keeps one block of each type to read from).
    pub fn shared_kv_layers(&self, n_layers: usize) -> Option<usize> {
        let period = self.get("synthetic.swa_period").unwrap_or(1).max(1);
        self.get("attention.shared_kv_layers")
            .map(|n| n.min(n_layers.saturating_sub(period)))
    }

    /// Whether block `layer` reads an earlier block's keys and values.
    fn shares_kv(&self, layer: usize, n_layers: usize) -> bool {
        self.shared_kv_layers(n_layers)
            .is_some_and(|n| layer + n >= n_layers)
    }

    /// The dimensions of block `layer` where blocks differ (Gemma 4): sliding-window blocks
    /// have heads `attention.key_length_swa` wide, full-attention blocks
    /// `synthetic.global_kv_heads` KV heads, and with `synthetic.double_wide_shared` the
    /// blocks that read another's keys and values an MLP twice as wide.
    pub fn layer_dims(&self, d: &Dims, layer: usize) -> Dims {
        let sliding = self.sliding(layer, d.layers);
        let mut out = *d;
        if let Some(w) = self.get("attention.key_length_swa").filter(|_| sliding) {
            out.head_dim = w;
        }
        if let Some(kv) = self.get("synthetic.global_kv_heads").filter(|_| !sliding) {
            out.kv_heads = kv;
        }
        let double = self
            .get("synthetic.double_wide_shared")
            .is_some_and(|n| n > 0);
        if double && self.shares_kv(layer, d.layers) {
            out.ffn = 2 * d.ffn;
        }
        out
    }
}

/// Whether GGUF tensor `name` is a norm's weight (`…norm.weight`, or numbered as Gemma 4's
/// `post_ffw_norm_1.weight`): a vector around 1 in a synthetic model.
pub fn is_norm(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".weight") else {
        return false;
    };
    let unnumbered = stem
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .strip_suffix('_');
    stem.ends_with("norm") || unnumbered.is_some_and(|s| s.ends_with("norm"))
}

/// Candle-order shape of a block tensor from its GGUF suffix.
pub fn block_shape(suffix: &str, d: &Dims, layout: &Layout) -> Option<Vec<usize>> {
    let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let experts = || layout.get("expert_count").filter(|&n| n > 0);
    let expert_ffn = layout.get("expert_feed_forward_length").unwrap_or(d.ffn);
    let up_rows = if layout.fused_gate_up {
        2 * d.ffn
    } else {
        d.ffn
    };
    let whole_qk_norm = layout.get("synthetic.qk_norm_whole").is_some_and(|n| n > 0);
    // The linear-attention (Gated DeltaNet) shapes of a hybrid model.
    let ssm = |key: &str| layout.get(key);
    let v_heads = ssm("ssm.time_step_rank");
    let inner = ssm("ssm.inner_size");
    let conv_dim = || Some(2 * ssm("ssm.group_count")? * ssm("ssm.state_size")? + inner?);
    let shared = layout.get("expert_shared_feed_forward_length").or_else(|| {
        // DeepSeek: `expert_shared_count` experts of the routed width, as one MLP.
        layout
            .get("expert_shared_count")
            .map(|n| n * expert_ffn)
            .filter(|&w| w > 0)
    });
    // Multi-head latent attention (DeepSeek): low-rank query and key/value projections.
    let mla = |key: &str| layout.get(&format!("attention.{key}"));
    let rope_dims = || layout.get("rope.dimension_count");
    let nope = || Some(mla("key_length_mla")? - rope_dims()?);
    let per_layer_input = || layout.get("embedding_length_per_layer_input");
    Some(match suffix {
        "attn_q_a.weight" => vec![mla("q_lora_rank")?, d.hidden],
        "attn_q_a_norm.weight" => vec![mla("q_lora_rank")?],
        "attn_q_b.weight" => vec![d.heads * mla("key_length_mla")?, mla("q_lora_rank")?],
        "attn_kv_a_mqa.weight" => vec![mla("kv_lora_rank")? + rope_dims()?, d.hidden],
        "attn_kv_a_norm.weight" => vec![mla("kv_lora_rank")?],
        "attn_k_b.weight" => vec![d.heads, mla("kv_lora_rank")?, nope()?],
        "attn_v_b.weight" => vec![d.heads, mla("value_length_mla")?, mla("kv_lora_rank")?],
        "attn_q.weight" if mla("key_length_mla").is_some() => {
            vec![d.heads * mla("key_length_mla")?, d.hidden]
        }
        "attn_output.weight" if mla("value_length_mla").is_some() => {
            vec![d.hidden, d.heads * mla("value_length_mla")?]
        }
        "exp_probs_b.bias" => vec![experts()?],
        "attn_q_norm.weight" if whole_qk_norm => vec![q],
        "attn_k_norm.weight" if whole_qk_norm => vec![kv],
        "ssm_norm.weight" => vec![inner? / v_heads?.max(1)],
        s if s.ends_with("norm.weight") && s.starts_with("attn_") && s != "attn_norm.weight" => {
            vec![d.head_dim]
        }
        s if is_norm(s) => vec![d.hidden],
        // A hybrid model's queries carry their output gate (twice the rows).
        "attn_q.weight" if layout.hybrid().is_some() => vec![2 * q, d.hidden],
        "attn_q.weight" => vec![q, d.hidden],
        "attn_k.weight" | "attn_v.weight" => vec![kv, d.hidden],
        "attn_qkv.weight" if layout.hybrid().is_some() => vec![conv_dim()?, d.hidden],
        "attn_qkv.weight" => vec![q + 2 * kv, d.hidden],
        "attn_gate.weight" => vec![inner?, d.hidden],
        "ssm_a" | "ssm_dt.bias" => vec![v_heads?],
        "ssm_alpha.weight" | "ssm_beta.weight" => vec![v_heads?, d.hidden],
        "ssm_ba.weight" => vec![2 * v_heads?, d.hidden],
        "ssm_conv1d.weight" => vec![conv_dim()?, ssm("ssm.conv_kernel")?],
        "ssm_out.weight" => vec![d.hidden, inner?],
        "ffn_gate_inp_shexp.weight" => vec![1, d.hidden],
        "ffn_gate_shexp.weight" | "ffn_up_shexp.weight" => vec![shared?, d.hidden],
        "ffn_down_shexp.weight" => vec![d.hidden, shared?],
        "attn_output.weight" => vec![d.hidden, q],
        "attn_output.bias" => vec![d.hidden],
        "attn_sinks.weight" => vec![d.heads],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "ffn_gate.weight" => vec![d.ffn, d.hidden],
        "ffn_up.weight" => vec![up_rows, d.hidden],
        "ffn_down.weight" => vec![d.hidden, d.ffn],
        "ffn_gate_inp.weight" => vec![experts()?, d.hidden],
        "ffn_gate_inp.bias" => vec![experts()?],
        "ffn_gate_exps.bias" | "ffn_up_exps.bias" => vec![experts()?, expert_ffn],
        "ffn_down_exps.bias" => vec![experts()?, d.hidden],
        "ffn_gate_exps.weight" | "ffn_up_exps.weight" => vec![experts()?, expert_ffn, d.hidden],
        "ffn_down_exps.weight" => vec![experts()?, d.hidden, expert_ffn],
        "ffn_gate_up_exps.weight" => vec![experts()?, 2 * expert_ffn, d.hidden],
        "ffn_gate_inp.scale" => vec![d.hidden],
        "ffn_down_exps.scale" => vec![experts()?],
        "layer_output_scale.weight" => vec![1],
        "inp_gate.weight" => vec![per_layer_input()?, d.hidden],
        "proj.weight" => vec![d.hidden, per_layer_input()?],
        _ => return None,
    })
}

/// The role of a block tensor from its GGUF suffix and shape.
pub fn role_of(suffix: &str, shape: &[usize]) -> Role {
    match (suffix, shape.len()) {
        (_, 1) => Role::Vector,
        // Stacked per-expert biases (gpt-oss) are vectors too.
        (s, _) if s.ends_with(".bias") => Role::Vector,
        ("attn_v.weight", _) => Role::AttnV,
        ("ffn_down.weight" | "ffn_down_exps.weight", _) => Role::FfnDown,
        ("ffn_gate_inp.weight" | "ffn_gate_inp_shexp.weight", _) => Role::Router,
        // Convolution taps are kept in F32, as llama.cpp keeps them (rows of a few taps).
        ("ssm_conv1d.weight", _) => Role::Vector,
        _ => Role::Matrix,
    }
}

/// Every tensor a model of `spec`'s family with dimensions `d` holds, in GGUF file order:
/// embedding, output norm, output matrix (unless `tied`), RoPE frequency factors (when
/// `rope_freqs`), the per-layer input embeddings and their projection (with
/// `embedding_length_per_layer_input`, Gemma 4), then each block's tensors as the family's
/// tiny config lists them. `metadata` holds the `{arch}.{key}` integers the model is written
/// with (expert counts come from it).
pub fn plan(
    spec: &FamilySpec,
    d: &Dims,
    tied: bool,
    rope_freqs: bool,
    metadata: &[(&str, u32)],
) -> Result<Vec<Planned>> {
    let layout = Layout {
        fused_gate_up: spec.tiny.fused_gate_up,
        metadata,
    };
    let top = |name: &str, shape: Vec<usize>, role| Planned {
        name: name.into(),
        shape,
        role,
        layer: None,
    };
    let embedding_role = if tied { Role::Output } else { Role::Embedding };
    let mut out = vec![
        top("token_embd.weight", vec![d.vocab, d.hidden], embedding_role),
        top("output_norm.weight", vec![d.hidden], Role::Vector),
    ];
    if !tied {
        out.push(top("output.weight", vec![d.vocab, d.hidden], Role::Output));
    }
    if rope_freqs {
        out.push(top("rope_freqs.weight", vec![d.head_dim / 2], Role::Vector));
    }
    if let Some(p) = layout
        .get("embedding_length_per_layer_input")
        .filter(|&p| p > 0)
    {
        let width = d.layers * p;
        out.push(top(
            "per_layer_token_embd.weight",
            vec![d.vocab, width],
            Role::Embedding,
        ));
        out.push(top(
            "per_layer_model_proj.weight",
            vec![width, d.hidden],
            Role::Matrix,
        ));
        out.push(top("per_layer_proj_norm.weight", vec![p], Role::Vector));
    }
    for layer in 0..d.layers {
        let dl = layout.layer_dims(d, layer);
        for suffix in spec.tiny.block_tensors {
            if !layout.in_layer(suffix, layer, d.layers) {
                continue;
            }
            let shape = block_shape(suffix, &dl, &layout).ok_or_else(|| {
                Error::Internal(format!(
                    "synthetic model: no shape rule for block tensor '{suffix}' of family '{}'",
                    spec.id
                ))
            })?;
            out.push(Planned {
                name: format!("blk.{layer}.{suffix}"),
                role: role_of(suffix, &shape),
                shape,
                layer: Some(layer),
            });
        }
    }
    Ok(out)
}

/// The metadata every family reads (`{arch}.*` dimensions, epsilon, RoPE base) followed by
/// `extra` family-specific `{arch}.{key}` integers. Where blocks differ
/// ([`Layout::layer_dims`], [`Layout::sliding`]), the per-block values are written as arrays,
/// as llama.cpp's converter writes them: `feed_forward_length`, `attention.head_count_kv`
/// and `attention.sliding_window_pattern`.
pub fn metadata(
    arch: &str,
    d: &Dims,
    eps: f32,
    rope_base: f32,
    extra: &[(&str, u32)],
) -> Vec<(String, gguf_file::Value)> {
    let u = |v: usize| gguf_file::Value::U32(v as u32);
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            gguf_file::Value::String(arch.into()),
        ),
        (format!("{arch}.block_count"), u(d.layers)),
        (format!("{arch}.embedding_length"), u(d.hidden)),
        (format!("{arch}.feed_forward_length"), u(d.ffn)),
        (format!("{arch}.attention.head_count"), u(d.heads)),
        (format!("{arch}.attention.head_count_kv"), u(d.kv_heads)),
        (format!("{arch}.context_length"), u(d.context)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            gguf_file::Value::F32(eps),
        ),
        (
            format!("{arch}.rope.freq_base"),
            gguf_file::Value::F32(rope_base),
        ),
    ];
    for (k, v) in extra.iter().filter(|(k, _)| !k.starts_with(HINT_PREFIX)) {
        meta.push((format!("{arch}.{k}"), extra_value(k, *v)));
    }
    let layout = Layout {
        fused_gate_up: false,
        metadata: extra,
    };
    let hinted = |key: &str| extra.iter().any(|(k, _)| *k == key);
    let per_layer = |f: &dyn Fn(&Dims) -> usize| {
        gguf_file::Value::Array(
            (0..d.layers)
                .map(|i| u(f(&layout.layer_dims(d, i))))
                .collect(),
        )
    };
    let mut set =
        |key: String, value: gguf_file::Value| match meta.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => meta.push((key, value)),
        };
    if let Some(n) = layout.shared_kv_layers(d.layers) {
        set(format!("{arch}.attention.shared_kv_layers"), u(n));
    }
    if hinted("synthetic.double_wide_shared") {
        set(format!("{arch}.feed_forward_length"), per_layer(&|l| l.ffn));
    }
    if hinted("synthetic.global_kv_heads") {
        set(
            format!("{arch}.attention.head_count_kv"),
            per_layer(&|l| l.kv_heads),
        );
    }
    if hinted("synthetic.swa_period") {
        let pattern = (0..d.layers)
            .map(|i| gguf_file::Value::Bool(layout.sliding(i, d.layers)))
            .collect();
        set(
            format!("{arch}.attention.sliding_window_pattern"),
            gguf_file::Value::Array(pattern),
        );
    }
    meta
}

/// Keys (by their last part) that llama.cpp reads as f32; every other extra key is a u32.
const F32_KEYS: &[&str] = &[
    "freq_base_swa",
    "final_logit_softcapping",
    "attn_logit_softcapping",
];

/// A preset's extra key as the type llama.cpp reads it: f32 for [`F32_KEYS`], RoPE's
/// `dimension_sections` as four i32 (the value for each of the first three, 0 for the
/// fourth: on text positions the sections change nothing), else u32.
fn extra_value(key: &str, v: u32) -> gguf_file::Value {
    let last = key.rsplit('.').next().unwrap_or(key);
    if F32_KEYS.contains(&last) {
        return gguf_file::Value::F32(v as f32);
    }
    if last == "dimension_sections" {
        let s = gguf_file::Value::I32(v as i32);
        return gguf_file::Value::Array(vec![s.clone(), s.clone(), s, gguf_file::Value::I32(0)]);
    }
    gguf_file::Value::U32(v)
}

/// A small deterministic generator (xorshift64), so synthetic models are identical across runs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by 1: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A CPU f32 tensor uniform in `center ± spread`.
    pub fn tensor(&mut self, shape: &[usize], center: f32, spread: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| center + spread * self.next_f32()).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// How a synthetic tensor is stored: one of candle's types, or one of our block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    /// A type candle quantizes and computes.
    Ggml(GgmlDType),
    /// MXFP4, IQ4_NL or IQ4_XS blocks (computed by our own kernels).
    Own(BlockType),
}

impl From<GgmlDType> for Stored {
    fn from(t: GgmlDType) -> Self {
        Self::Ggml(t)
    }
}

impl Stored {
    /// ggml's name for the type (`Q8_0`, `MXFP4`).
    pub fn name(self) -> &'static str {
        let id = match self {
            Self::Ggml(t) => crate::formats::ggml_types::TYPES
                .iter()
                .find(|ty| ty.candle == Some(t))
                .map(|ty| ty.id),
            Self::Own(t) => Some(t.id()),
        };
        id.and_then(crate::formats::ggml_types::by_id)
            .map_or("?", |ty| ty.name)
    }

    /// Bytes of `elements` values, when a whole number of blocks.
    pub fn bytes(self, elements: usize) -> Option<usize> {
        let (block, size) = match self {
            Self::Ggml(t) => (t.block_size(), t.type_size()),
            Self::Own(t) => (t.block(), t.block_bytes()),
        };
        elements
            .is_multiple_of(block)
            .then(|| elements / block * size)
    }
}

/// Blocks in each pool of pre-quantized random blocks.
const POOL_BLOCKS: usize = 4096;
/// Consecutive pool blocks copied per random pick (fewer draws, same statistics per block).
const RUN_BLOCKS: usize = 8;

/// Makes large random quantized tensors quickly: each (type, value range) gets a pool of
/// random blocks quantized once by candle, and tensors are filled with runs of pool blocks
/// picked at random. Every block is valid for its type (finite scales), and no tensor is ever
/// materialised in f32.
pub struct RandomTensors {
    rng: Rng,
    device: Device,
    pools: HashMap<(Stored, u32), Vec<u8>>,
}

impl RandomTensors {
    /// A generator seeded with `seed` that builds tensors on `device`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: Rng::new(seed),
            device: device.clone(),
            pools: HashMap::new(),
        }
    }

    /// A `shape` tensor of type `dtype` with values uniform in `center ± spread` (up to the
    /// type's precision). The last dimension must be a whole number of `dtype` blocks.
    pub fn tensor(
        &mut self,
        shape: &[usize],
        dtype: GgmlDType,
        center: f32,
        spread: f32,
    ) -> Result<QTensor> {
        let bytes = self.blocks(shape, Stored::Ggml(dtype), center, spread)?;
        let storage = QStorage::from_data(Cow::Owned(bytes), &self.device, dtype)?;
        Ok(QTensor::new(storage, shape)?)
    }

    /// A `shape` tensor stored as `stored` (candle's types on the generator's device, ours
    /// on the CPU), values as [`RandomTensors::tensor`] makes them.
    pub fn stored(
        &mut self,
        shape: &[usize],
        stored: Stored,
        center: f32,
        spread: f32,
    ) -> Result<MemoryTensor> {
        Ok(match stored {
            Stored::Ggml(t) => self.tensor(shape, t, center, spread)?.into(),
            Stored::Own(ty) => {
                let bytes = self.blocks(shape, stored, center, spread)?;
                Blocks::owned(ty, bytes, shape.to_vec())?.into()
            }
        })
    }

    /// The bytes of a `shape` tensor of `stored` blocks, in runs of pool blocks.
    fn blocks(
        &mut self,
        shape: &[usize],
        stored: Stored,
        center: f32,
        spread: f32,
    ) -> Result<Vec<u8>> {
        let (block, type_size) = match stored {
            Stored::Ggml(t) => (t.block_size(), t.type_size()),
            Stored::Own(t) => (t.block(), t.block_bytes()),
        };
        let last = shape.last().copied().unwrap_or(1);
        if last % block != 0 {
            return Err(Error::InvalidArgument(format!(
                "a {shape:?} tensor cannot be stored as {}: rows of {last} are not a multiple of its block of {block}",
                stored.name()
            )));
        }
        let n_blocks = shape.iter().product::<usize>() / block;
        let key = (
            stored,
            (center.to_bits() ^ spread.to_bits().rotate_left(16)),
        );
        let pool = match self.pools.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let values = self.rng.tensor(&[POOL_BLOCKS, block], center, spread)?;
                e.insert(match stored {
                    Stored::Ggml(t) => QTensor::quantize(&values, t)?.data()?.into_owned(),
                    Stored::Own(t) => t.quantize(&values.flatten_all()?.to_vec1()?),
                })
            }
        };
        let mut bytes = Vec::with_capacity(n_blocks * type_size);
        let mut left = n_blocks;
        while left > 0 {
            let run = left.min(RUN_BLOCKS);
            let start = (self.rng.next_u64() as usize) % (POOL_BLOCKS - RUN_BLOCKS + 1);
            bytes.extend_from_slice(&pool[start * type_size..(start + run) * type_size]);
            left -= run;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Dims {
        Dims {
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            ffn: 96,
            vocab: 128,
            context: 256,
        }
    }

    #[test]
    fn plan_lists_output_only_when_untied_and_every_block_tensor() {
        let spec = &super::super::llama::SPEC;
        let tied = plan(spec, &dims(), true, false, &[]).unwrap();
        let untied = plan(spec, &dims(), false, true, &[]).unwrap();
        assert_eq!(tied.len(), 2 + 2 * spec.tiny.block_tensors.len());
        assert_eq!(untied.len(), tied.len() + 2);
        assert_eq!(tied[0].role, Role::Output);
        let out = untied.iter().find(|t| t.name == "output.weight").unwrap();
        assert_eq!((out.role, out.shape.clone()), (Role::Output, vec![128, 64]));
        let v = tied
            .iter()
            .find(|t| t.name == "blk.1.attn_v.weight")
            .unwrap();
        assert_eq!(
            (v.role, v.shape.clone(), v.layer),
            (Role::AttnV, vec![32, 64], Some(1))
        );
    }

    #[test]
    fn fused_and_expert_tensors_take_their_shapes_from_the_layout() {
        let d = dims();
        let plain = Layout {
            fused_gate_up: false,
            metadata: &[],
        };
        let moe = Layout {
            fused_gate_up: false,
            metadata: &[("expert_count", 4), ("expert_feed_forward_length", 32)],
        };
        let fused = Layout {
            fused_gate_up: true,
            metadata: &[("expert_count", 4)],
        };
        assert_eq!(block_shape("ffn_up.weight", &d, &plain), Some(vec![96, 64]));
        assert_eq!(
            block_shape("ffn_up.weight", &d, &fused),
            Some(vec![192, 64])
        );
        assert_eq!(
            block_shape("attn_qkv.weight", &d, &plain),
            Some(vec![128, 64])
        );
        assert_eq!(block_shape("ffn_gate_inp.weight", &d, &plain), None);
        assert_eq!(
            block_shape("ffn_gate_inp.weight", &d, &moe),
            Some(vec![4, 64])
        );
        let up = block_shape("ffn_up_exps.weight", &d, &moe);
        assert_eq!(up, Some(vec![4, 32, 64]));
        let down = block_shape("ffn_down_exps.weight", &d, &moe);
        assert_eq!(down, Some(vec![4, 64, 32]));
        // Without an expert width, the experts are as wide as the dense FFN (Mixtral).
        let gate = block_shape("ffn_gate_exps.weight", &d, &fused);
        assert_eq!(gate, Some(vec![4, 96, 64]));
        assert_eq!(role_of("ffn_gate_inp.weight", &[4, 64]), Role::Router);
        assert_eq!(role_of("ffn_down_exps.weight", &[4, 64, 32]), Role::FfnDown);
    }

    #[test]
    fn random_quantized_tensors_have_the_shape_type_and_value_range_asked_for() {
        let mut r = RandomTensors::new(7, &Device::Cpu);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::F16,
        ] {
            let t = r.tensor(&[8, 512], dtype, 0.0, 0.5).unwrap();
            assert_eq!((t.dtype(), t.shape().dims()), (dtype, &[8, 512][..]));
            let v: Vec<f32> = t
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max > 0.3 && max < 0.6, "{dtype:?}: max |x| {max}");
            assert!(v.iter().all(|x| x.is_finite()), "{dtype:?}");
        }
    }

    #[test]
    fn random_mxfp4_tensors_are_whole_blocks_in_the_value_range() {
        let mut r = RandomTensors::new(7, &Device::Cpu);
        let MemoryTensor::Blocks(t) = r
            .stored(&[2, 8, 64], Stored::Own(BlockType::Mxfp4), 0.0, 0.5)
            .unwrap()
        else {
            panic!("not MXFP4")
        };
        assert_eq!(
            (t.shape(), t.data().len()),
            (&[2, 8, 64][..], 2 * 8 * 2 * 17)
        );
        let v = t.dequantize();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.3 && max <= 0.75, "max |x| {max}");
        assert_eq!(Stored::Own(BlockType::Mxfp4).name(), "MXFP4");
        assert_eq!(Stored::Own(BlockType::Mxfp4).bytes(64), Some(34));
        assert_eq!(Stored::Ggml(GgmlDType::Q8_0).name(), "Q8_0");
    }

    #[test]
    fn rows_that_are_not_whole_blocks_are_rejected() {
        let mut r = RandomTensors::new(7, &Device::Cpu);
        let e = r.tensor(&[4, 640], GgmlDType::Q4K, 0.0, 1.0).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
    }
}
