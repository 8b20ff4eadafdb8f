//! The table of synthetic models (`bench --synthetic NAME:QUANT`): published model shapes for
//! the families this build runs, and llama.cpp's quantization mixes (`llama-quantize`'s choice
//! of type per tensor), so a synthetic model matches a real download tensor for tensor.
//! Mixture-of-experts presets take their expert counts from `extra` metadata; their shapes
//! are exact, but the mix applies only llama-quantize's dense rules (its MoE-specific tweaks,
//! such as more bits for 8-expert models' `attn_v`, are not reproduced).

use candle_core::quantized::GgmlDType;

use crate::formats::blocks::BlockType;
use crate::models::synthetic::{Dims, Planned, Role, Stored};

/// One model shape.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Name used on the command line.
    pub name: &'static str,
    /// The published model it reproduces.
    pub about: &'static str,
    /// The family (registry id) that runs it.
    pub family: &'static str,
    /// Dimensions.
    pub dims: Dims,
    /// Output layer shares the embedding table.
    pub tied_embeddings: bool,
    /// Carries llama 3's per-frequency RoPE factors (`rope_freqs.weight`).
    pub rope_freqs: bool,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base.
    pub rope_base: f32,
    /// Further `{arch}.{key}` integers the family reads.
    pub extra: &'static [(&'static str, u32)],
}

const fn dims(
    layers: usize,
    hidden: usize,
    (heads, kv_heads, head_dim): (usize, usize, usize),
    ffn: usize,
    vocab: usize,
    context: usize,
) -> Dims {
    Dims {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim,
        ffn,
        vocab,
        context,
    }
}

const LLAMA3_VOCAB: usize = 128_256;
const QWEN_VOCAB: usize = 151_936;
const GEMMA3_VOCAB: usize = 262_144;
const GEMMA3_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 256),
    ("attention.value_length", 256),
    ("attention.sliding_window", 512),
];
const QWEN3_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 128),
    ("attention.value_length", 128),
];
const QWEN3_MOE_30B_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 128),
    ("attention.value_length", 128),
    ("expert_count", 128),
    ("expert_used_count", 8),
    ("expert_feed_forward_length", 768),
];
/// A tiny Qwen3 MoE: 8 experts of 256 with 2 active, head width 64 (what the fused GPU
/// decoder takes), so tests can run routed experts on every path in seconds.
const QWEN3_MOE_TINY_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 64),
    ("attention.value_length", 64),
    ("expert_count", 8),
    ("expert_used_count", 2),
    ("expert_feed_forward_length", 256),
];
const QWEN3_5_VOCAB: usize = 248_320;
/// Qwen3.5's hybrid layout as llama.cpp's converter writes it: three Gated DeltaNet layers
/// (16 key heads, 32 value heads of 128) to each gated attention layer, RoPE over 64 of the
/// 256 dimensions of a head. llama.cpp requires `rope.dimension_sections`; a single value
/// stands for all four sections, which on text positions changes nothing.
const QWEN3_5_9B_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 256),
    ("attention.value_length", 256),
    ("rope.dimension_count", 64),
    ("rope.dimension_sections", 11),
    ("full_attention_interval", 4),
    ("ssm.conv_kernel", 4),
    ("ssm.state_size", 128),
    ("ssm.group_count", 16),
    ("ssm.time_step_rank", 32),
    ("ssm.inner_size", 4096),
];
const QWEN3_5_35B_A3B_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 256),
    ("attention.value_length", 256),
    ("rope.dimension_count", 64),
    ("rope.dimension_sections", 11),
    ("full_attention_interval", 4),
    ("ssm.conv_kernel", 4),
    ("ssm.state_size", 128),
    ("ssm.group_count", 16),
    ("ssm.time_step_rank", 32),
    ("ssm.inner_size", 4096),
    ("expert_count", 256),
    ("expert_used_count", 8),
    ("expert_feed_forward_length", 512),
    ("expert_shared_feed_forward_length", 512),
];

/// Gemma 4's blocks as llama.cpp's converter writes them: five sliding-window blocks (heads
/// 256 wide, RoPE base 10k) to one full-attention block (heads 512 wide; `rope_freqs` holds
/// its proportional RoPE, here all ones: the same work), the last block full.
/// Shapes from the published `config.json` files (google/gemma-4-E4B, gemma-4-26B-A4B).
const GEMMA4_E4B_EXTRA: &[(&str, u32)] = &[
    // RoPE spans each head (llama.cpp rotates the full head width of the full blocks by
    // default, which the sliding blocks' narrower heads cannot hold).
    ("rope.dimension_count", 512),
    ("rope.dimension_count_swa", 256),
    ("attention.key_length", 512),
    ("attention.value_length", 512),
    ("attention.key_length_swa", 256),
    ("attention.value_length_swa", 256),
    ("attention.sliding_window", 512),
    ("rope.freq_base_swa", 10_000),
    ("final_logit_softcapping", 30),
    // The last 18 blocks read the keys and values of blocks 22 and 23.
    ("attention.shared_kv_layers", 18),
    ("embedding_length_per_layer_input", 256),
    ("synthetic.swa_period", 6),
];
const GEMMA4_26B_A4B_EXTRA: &[(&str, u32)] = &[
    // RoPE spans each head (llama.cpp rotates the full head width of the full blocks by
    // default, which the sliding blocks' narrower heads cannot hold).
    ("rope.dimension_count", 512),
    ("rope.dimension_count_swa", 256),
    ("attention.key_length", 512),
    ("attention.value_length", 512),
    ("attention.key_length_swa", 256),
    ("attention.value_length_swa", 256),
    ("attention.sliding_window", 1024),
    ("rope.freq_base_swa", 10_000),
    ("final_logit_softcapping", 30),
    ("expert_count", 128),
    ("expert_used_count", 8),
    ("expert_feed_forward_length", 704),
    ("synthetic.swa_period", 6),
    // No per-layer input embeddings; llama.cpp still requires the key (its converter writes 0).
    ("embedding_length_per_layer_input", 0),
    // Full blocks: 2 KV heads, their keys serving as values (attention_k_eq_v).
    ("synthetic.global_kv_heads", 2),
    ("synthetic.global_k_eq_v", 1),
];

/// gpt-oss-20b as llama.cpp's converter writes it: the window, 32 experts of 2880 with 4
/// active (head width 64: 64 query heads are 4096 wide, more than the model's 2880).
const GPT_OSS_20B_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 64),
    ("attention.value_length", 64),
    ("attention.sliding_window", 128),
    ("expert_count", 32),
    ("expert_used_count", 4),
    ("expert_feed_forward_length", 2880),
];

/// DeepSeek-V2-Lite as llama.cpp's converter writes it (architecture `deepseek2`): a plain
/// query projection (no `q_lora_rank`), a latent of 512 and rotary keys of 64 (the cache
/// holds 576 values per layer and token), heads of 128 + 64, the first block dense, then 64
/// experts of 1408 (6 active, softmax scores, one group) beside 2 shared ones. Its YaRN
/// (factor 40) is left out: a string key, and the same work per token.
const DEEPSEEK_V2_LITE_EXTRA: &[(&str, u32)] = &[
    ("attention.key_length", 576),
    ("attention.value_length", 512),
    ("attention.kv_lora_rank", 512),
    ("attention.key_length_mla", 192),
    ("attention.value_length_mla", 128),
    ("rope.dimension_count", 64),
    ("leading_dense_block_count", 1),
    ("expert_count", 64),
    ("expert_used_count", 6),
    ("expert_group_count", 1),
    ("expert_group_used_count", 1),
    ("expert_gating_func", 1),
    ("expert_shared_count", 2),
    ("expert_feed_forward_length", 1408),
];

/// Every preset.
pub static PRESETS: &[Preset] = &[
    Preset {
        name: "llama-tiny",
        about: "a tiny llama for smoke tests (2 layers, 256 wide)",
        family: "llama",
        dims: dims(2, 256, (4, 2, 64), 512, 512, 2048),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-5,
        rope_base: 10_000.0,
        extra: &[],
    },
    Preset {
        name: "llama-gqa8-tiny",
        about: "a tiny llama, eight query heads per KV head of 128 (2 layers, 1024 wide)",
        family: "llama",
        dims: dims(2, 1024, (8, 1, 128), 2048, 512, 4096),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-5,
        rope_base: 10_000.0,
        extra: &[],
    },
    Preset {
        name: "smollm2-135m",
        about: "SmolLM2 135M",
        family: "llama",
        dims: dims(30, 576, (9, 3, 64), 1536, 49_152, 8192),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-5,
        rope_base: 100_000.0,
        extra: &[],
    },
    Preset {
        name: "llama-1b",
        about: "Llama 3.2 1B",
        family: "llama",
        dims: dims(16, 2048, (32, 8, 64), 8192, LLAMA3_VOCAB, 131_072),
        tied_embeddings: true,
        rope_freqs: true,
        eps: 1e-5,
        rope_base: 500_000.0,
        extra: &[],
    },
    Preset {
        name: "llama-3b",
        about: "Llama 3.2 3B",
        family: "llama",
        dims: dims(28, 3072, (24, 8, 128), 8192, LLAMA3_VOCAB, 131_072),
        tied_embeddings: true,
        rope_freqs: true,
        eps: 1e-5,
        rope_base: 500_000.0,
        extra: &[],
    },
    Preset {
        name: "llama-8b",
        about: "Llama 3.1 8B",
        family: "llama",
        dims: dims(32, 4096, (32, 8, 128), 14_336, LLAMA3_VOCAB, 131_072),
        tied_embeddings: false,
        rope_freqs: true,
        eps: 1e-5,
        rope_base: 500_000.0,
        extra: &[],
    },
    Preset {
        name: "qwen2.5-0.5b",
        about: "Qwen2.5 0.5B",
        family: "qwen2",
        dims: dims(24, 896, (14, 2, 64), 4864, QWEN_VOCAB, 32_768),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: &[],
    },
    Preset {
        name: "qwen3-0.6b",
        about: "Qwen3 0.6B",
        family: "qwen3",
        dims: dims(28, 1024, (16, 8, 128), 3072, QWEN_VOCAB, 40_960),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: QWEN3_EXTRA,
    },
    Preset {
        name: "qwen3-8b",
        about: "Qwen3 8B",
        family: "qwen3",
        dims: dims(36, 4096, (32, 8, 128), 12_288, QWEN_VOCAB, 40_960),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: QWEN3_EXTRA,
    },
    Preset {
        name: "qwen3-moe-tiny",
        about: "a tiny Qwen3 MoE for smoke tests (2 layers, 256 wide, 8 experts, 2 active)",
        family: "qwen3_moe",
        dims: dims(2, 256, (4, 2, 64), 512, 512, 2048),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: QWEN3_MOE_TINY_EXTRA,
    },
    Preset {
        name: "qwen3-moe-30b-a3b",
        about: "Qwen3 30B-A3B (128 experts, 8 active)",
        family: "qwen3_moe",
        dims: dims(48, 2048, (32, 4, 128), 6144, QWEN_VOCAB, 40_960),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: QWEN3_MOE_30B_EXTRA,
    },
    Preset {
        name: "qwen3.5-9b",
        about: "Qwen3.5 9B (Gated DeltaNet hybrid)",
        family: "qwen3_5",
        dims: dims(32, 4096, (16, 4, 256), 12_288, QWEN3_5_VOCAB, 262_144),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 10_000_000.0,
        extra: QWEN3_5_9B_EXTRA,
    },
    Preset {
        name: "qwen3.5-35b-a3b",
        about: "Qwen3.5 35B-A3B (Gated DeltaNet hybrid, 256 experts, 8 active, shared expert)",
        family: "qwen3_5_moe",
        dims: dims(40, 2048, (16, 2, 256), 512, QWEN3_5_VOCAB, 262_144),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 10_000_000.0,
        extra: QWEN3_5_35B_A3B_EXTRA,
    },
    Preset {
        name: "gemma3-270m",
        about: "Gemma 3 270M",
        family: "gemma3",
        dims: dims(18, 640, (4, 1, 256), 2048, GEMMA3_VOCAB, 32_768),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: GEMMA3_EXTRA,
    },
    Preset {
        name: "gemma3-1b",
        about: "Gemma 3 1B",
        family: "gemma3",
        dims: dims(26, 1152, (4, 1, 256), 6912, GEMMA3_VOCAB, 32_768),
        tied_embeddings: true,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: GEMMA3_EXTRA,
    },
    Preset {
        name: "gemma4-e4b",
        about: "Gemma 4 E4B (per-layer inputs, KV shared by the last 18 blocks)",
        family: "gemma4",
        // head_dim: the full blocks' (the sliding ones' is in the extra keys).
        dims: dims(42, 2560, (8, 2, 512), 10_240, GEMMA3_VOCAB, 131_072),
        tied_embeddings: true,
        rope_freqs: true,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: GEMMA4_E4B_EXTRA,
    },
    Preset {
        name: "gemma4-26b-a4b",
        about: "Gemma 4 26B-A4B (128 experts, 8 active, beside a dense MLP)",
        family: "gemma4",
        dims: dims(30, 2816, (16, 8, 512), 2112, GEMMA3_VOCAB, 262_144),
        tied_embeddings: true,
        rope_freqs: true,
        eps: 1e-6,
        rope_base: 1_000_000.0,
        extra: GEMMA4_26B_A4B_EXTRA,
    },
    Preset {
        name: "gpt-oss-20b",
        about: "gpt-oss-20b (32 experts, 4 active; use the mxfp4 mix for its MXFP4 experts)",
        family: "gpt_oss",
        dims: dims(24, 2880, (64, 8, 64), 2880, 201_088, 131_072),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-5,
        rope_base: 150_000.0,
        extra: GPT_OSS_20B_EXTRA,
    },
    Preset {
        name: "deepseek-v2-lite",
        about: "DeepSeek-V2-Lite (MLA, 64 experts, 6 active, 2 shared; 15.7 B)",
        family: "deepseek_v3",
        // One KV head of 576 (the latent and the rotary key), as the converter states MLA.
        dims: dims(27, 2048, (16, 1, 576), 10_944, 102_400, 163_840),
        tied_embeddings: false,
        rope_freqs: false,
        eps: 1e-6,
        rope_base: 10_000.0,
        extra: DEEPSEEK_V2_LITE_EXTRA,
    },
];

/// A quantization mix, as `llama-quantize` names its file types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Name on the command line.
    pub name: &'static str,
    /// The type of most matrices.
    pub base: GgmlDType,
    /// Q4_K_M's extra bits: Q6_K for `attn_v` and `ffn_down` in the layers llama.cpp picks.
    pub more_bits_v_down: bool,
    /// llama.cpp's `general.file_type` for this mix.
    pub file_type: u32,
    /// `MXFP4_MOE`: the stacked expert tensors are MXFP4 (the rest `base`).
    pub mxfp4_experts: bool,
    /// `IQ4_NL`, `IQ4_XS`: every matrix but the output layer is of this type of ours (rows
    /// that are not whole blocks fall back as llama-quantize's do); `base` is the output
    /// layer's.
    pub own: Option<BlockType>,
}

/// Every mix a preset can take.
pub static MIXES: &[Mix] = &[
    mix("f32", GgmlDType::F32, 0),
    mix("f16", GgmlDType::F16, 1),
    mix("q8_0", GgmlDType::Q8_0, 7),
    mix("q6_k", GgmlDType::Q6K, 18),
    mix("q5_0", GgmlDType::Q5_0, 8),
    mix("q5_1", GgmlDType::Q5_1, 9),
    mix("q4_0", GgmlDType::Q4_0, 2),
    mix("q4_1", GgmlDType::Q4_1, 3),
    Mix {
        name: "q4_k_m",
        base: GgmlDType::Q4K,
        more_bits_v_down: true,
        file_type: 15,
        mxfp4_experts: false,
        own: None,
    },
    // `q4_k` names the usual Q4_K download, Q4_K_M.
    Mix {
        name: "q4_k",
        base: GgmlDType::Q4K,
        more_bits_v_down: true,
        file_type: 15,
        mxfp4_experts: false,
        own: None,
    },
    // llama-quantize's MXFP4_MOE: experts MXFP4, every other matrix Q8_0 (gpt-oss).
    Mix {
        name: "mxfp4",
        base: GgmlDType::Q8_0,
        more_bits_v_down: false,
        file_type: 38,
        mxfp4_experts: true,
        own: None,
    },
    // llama-quantize's IQ4_NL and IQ4_XS (without an importance matrix): the output layer
    // Q6_K, every other matrix the type (its rule that gives `attn_v` Q5_K where four or more
    // query heads share a KV head is not modelled).
    Mix {
        name: "iq4_nl",
        base: GgmlDType::Q6K,
        more_bits_v_down: false,
        file_type: 25,
        mxfp4_experts: false,
        own: Some(BlockType::Iq4Nl),
    },
    Mix {
        name: "iq4_xs",
        base: GgmlDType::Q6K,
        more_bits_v_down: false,
        file_type: 30,
        mxfp4_experts: false,
        own: Some(BlockType::Iq4Xs),
    },
];

const fn mix(name: &'static str, base: GgmlDType, file_type: u32) -> Mix {
    Mix {
        name,
        base,
        more_bits_v_down: false,
        file_type,
        mxfp4_experts: false,
        own: None,
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// one between.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// llama.cpp's fallback when rows are not a whole number of the type's blocks.
fn compatible(ty: GgmlDType, row: usize) -> GgmlDType {
    if row.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let fallback = match ty {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    };
    if row.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        GgmlDType::F16
    }
}

impl Mix {
    /// The type `llama-quantize` gives tensor `t` of a model with `n_layers` blocks.
    pub fn type_for(&self, t: &Planned, n_layers: usize) -> Stored {
        let stacked_experts = t.shape.len() == 3 && t.role != Role::Vector;
        if self.mxfp4_experts && stacked_experts && t.shape[2].is_multiple_of(32) {
            return Stored::Own(BlockType::Mxfp4);
        }
        if let Some(own) = self.own {
            return self.own_type_for(own, t);
        }
        Stored::Ggml(self.ggml_type_for(t, n_layers))
    }

    /// [`Mix::type_for`] for the mixes of our own types: the output layer `base` (Q8_0 when
    /// its rows are not whole blocks of it), every other matrix `own`, IQ4_NL for rows that are
    /// not whole IQ4_XS super-blocks, F16 for rows that are not whole blocks of 32.
    fn own_type_for(&self, own: BlockType, t: &Planned) -> Stored {
        let row = t.shape.last().copied().unwrap_or(1);
        match t.role {
            Role::Vector | Role::Router => Stored::Ggml(GgmlDType::F32),
            Role::Output => Stored::Ggml(compatible(self.base, row)),
            _ if row.is_multiple_of(own.block()) => Stored::Own(own),
            _ if row.is_multiple_of(BlockType::Iq4Nl.block()) => Stored::Own(BlockType::Iq4Nl),
            _ => Stored::Ggml(GgmlDType::F16),
        }
    }

    fn ggml_type_for(&self, t: &Planned, n_layers: usize) -> GgmlDType {
        let row = t.shape.last().copied().unwrap_or(1);
        let quantized = !matches!(self.base, GgmlDType::F32 | GgmlDType::F16);
        let ty = match t.role {
            Role::Vector | Role::Router => return GgmlDType::F32,
            _ if !quantized => self.base,
            Role::Output if row % self.base.block_size() != 0 => GgmlDType::Q8_0,
            Role::Output if self.base == GgmlDType::Q8_0 => GgmlDType::Q8_0,
            Role::Output => GgmlDType::Q6K,
            Role::AttnV | Role::FfnDown
                if self.more_bits_v_down && use_more_bits(t.layer.unwrap_or(0), n_layers) =>
            {
                GgmlDType::Q6K
            }
            Role::AttnV | Role::FfnDown | Role::Matrix | Role::Embedding => self.base,
        };
        compatible(ty, row)
    }
}

/// A preset and a mix, parsed from `NAME:MIX`.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    /// The shape.
    pub preset: Preset,
    /// The quantization.
    pub mix: Mix,
}

impl Choice {
    /// `NAME:MIX`, e.g. `llama-1b:q4_0`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.preset.name, self.mix.name)
    }
}

/// Every `NAME` and every `MIX`, for messages and help.
pub fn listing() -> String {
    let names: Vec<String> = PRESETS
        .iter()
        .map(|p| format!("{} ({})", p.name, p.about))
        .collect();
    let mixes: Vec<&str> = MIXES.iter().map(|m| m.name).collect();
    format!(
        "presets: {}; quantizations: {}",
        names.join(", "),
        mixes.join(", ")
    )
}

/// Parses `NAME:MIX`; the error lists what exists.
pub fn parse(spec: &str) -> Result<Choice, String> {
    let (name, mix) = spec.split_once(':').ok_or_else(|| {
        format!(
            "'{spec}': expected NAME:QUANT, e.g. llama-1b:q4_0; {}",
            listing()
        )
    })?;
    let preset = PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("unknown preset '{name}'; {}", listing()))?;
    let mix = MIXES
        .iter()
        .find(|m| m.name == mix.to_ascii_lowercase())
        .ok_or_else(|| format!("unknown quantization '{mix}'; {}", listing()))?;
    Ok(Choice {
        preset: *preset,
        mix: *mix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{synthetic, FAMILIES};

    /// The tensors `p` writes (`tied` embeddings, `rope_freqs`).
    fn plan_of(p: &Preset, tied: bool, rope_freqs: bool) -> Vec<synthetic::Planned> {
        let spec = FAMILIES.iter().find(|f| f.id == p.family).unwrap();
        synthetic::plan(spec, &p.dims, tied, rope_freqs, p.extra).unwrap()
    }

    #[test]
    fn names_parse_and_unknown_ones_list_the_table() {
        let c = parse("llama-1b:q4_0").unwrap();
        assert_eq!((c.preset.dims.layers, c.mix.base), (16, GgmlDType::Q4_0));
        assert_eq!(c.label(), "llama-1b:q4_0");
        assert_eq!(parse("llama-8b:Q4_K").unwrap().mix.name, "q4_k");
        let e = parse("mixtral-8x7b:q4_k").unwrap_err();
        assert!(
            e.contains("llama-1b") && e.contains("qwen3-moe-30b-a3b"),
            "{e}"
        );
        assert!(parse("llama-1b").unwrap_err().contains("NAME:QUANT"));
        assert!(parse("llama-1b:q3_xs").unwrap_err().contains("q4_k_m"));
    }

    #[test]
    fn every_preset_names_a_registered_family_and_unique_name() {
        let mut seen = std::collections::HashSet::new();
        for p in PRESETS {
            assert!(seen.insert(p.name), "{}", p.name);
            assert!(FAMILIES.iter().any(|f| f.id == p.family), "{}", p.name);
        }
    }

    #[test]
    fn llama_1b_q4_0_has_llama_3_2_1b_shapes_and_size() {
        let c = parse("llama-1b:q4_0").unwrap();
        let spec = FAMILIES.iter().find(|f| f.id == "llama").unwrap();
        let plan = synthetic::plan(spec, &c.preset.dims, true, true, &[]).unwrap();
        let bytes: usize = plan
            .iter()
            .map(|t| {
                let ty = c.mix.type_for(t, 16);
                ty.bytes(t.shape.iter().product::<usize>()).unwrap()
            })
            .sum();
        let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
        // Llama 3.2 1B: 1.24 B parameters; bartowski's Q4_0 file is 771 MB (Q6_K embedding).
        assert_eq!(params, 1_235_814_432);
        assert!((760_000_000..780_000_000).contains(&bytes), "{bytes}");
        let embd = &plan[0];
        assert_eq!(c.mix.type_for(embd, 16), Stored::Ggml(GgmlDType::Q6K));
    }

    #[test]
    fn qwen3_moe_30b_a3b_has_its_published_parameter_count() {
        let c = parse("qwen3-moe-30b-a3b:q4_k").unwrap();
        let p = c.preset;
        let plan = plan_of(&p, false, false);
        let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
        // Qwen3-30B-A3B: 30.5 B parameters, 3.3 B active.
        assert!(
            (30_400_000_000..30_600_000_000).contains(&params),
            "{params}"
        );
        let down = plan
            .iter()
            .find(|t| t.name == "blk.0.ffn_down_exps.weight")
            .unwrap();
        assert_eq!(down.shape, [128, 2048, 768]);
        let router = plan
            .iter()
            .find(|t| t.name == "blk.0.ffn_gate_inp.weight")
            .unwrap();
        assert_eq!(c.mix.type_for(router, 48), Stored::Ggml(GgmlDType::F32));
    }

    #[test]
    fn deepseek_v2_lite_has_its_latent_attention_and_published_size() {
        let c = parse("deepseek-v2-lite:q4_k_m").unwrap();
        let p = c.preset;
        let plan = plan_of(&p, false, false);
        let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
        // DeepSeek-V2-Lite: 15.7 B parameters.
        assert!(
            (15_600_000_000..15_800_000_000).contains(&params),
            "{params}"
        );
        let shape = |name: &str| {
            let t = plan.iter().find(|t| t.name == name);
            t.map(|t| t.shape.clone())
        };
        assert_eq!(shape("blk.0.attn_q.weight"), Some(vec![16 * 192, 2048]));
        assert_eq!(shape("blk.0.attn_kv_a_mqa.weight"), Some(vec![576, 2048]));
        assert_eq!(shape("blk.0.attn_k_b.weight"), Some(vec![16, 512, 128]));
        assert_eq!(shape("blk.0.attn_v_b.weight"), Some(vec![16, 128, 512]));
        assert_eq!(shape("blk.0.ffn_down.weight"), Some(vec![2048, 10_944]));
        assert_eq!(shape("blk.1.ffn_up_shexp.weight"), Some(vec![2816, 2048]));
        assert_eq!(
            shape("blk.1.ffn_down_exps.weight"),
            Some(vec![64, 2048, 1408])
        );
        for absent in [
            "blk.0.attn_q_a.weight",
            "blk.0.ffn_gate_exps.weight",
            "blk.1.ffn_up.weight",
        ] {
            assert_eq!(shape(absent), None, "{absent}");
        }
        // Q4_K_M fits 24 GB with room (published Q4_K_M files are about 10 GB).
        let bytes: usize = plan
            .iter()
            .map(|t| {
                let ty = c.mix.type_for(t, p.dims.layers);
                ty.bytes(t.shape.iter().product::<usize>()).unwrap()
            })
            .sum();
        assert!((8_500_000_000..11_000_000_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn qwen3_5_presets_have_their_hybrid_layers_and_parameter_counts() {
        for (name, low, high) in [
            ("qwen3.5-9b:q4_k", 8_900_000_000usize, 9_000_000_000usize),
            ("qwen3.5-35b-a3b:q4_k", 34_500_000_000, 34_900_000_000),
        ] {
            let p = parse(name).unwrap().preset;
            let plan = plan_of(&p, false, false);
            let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
            assert!((low..high).contains(&params), "{name}: {params}");
            // Layers 0-2 are DeltaNet layers, layer 3 attends with a gated query.
            let has = |n: &str| plan.iter().any(|t| t.name == n);
            assert!(has("blk.2.ssm_conv1d.weight") && !has("blk.2.attn_q.weight"));
            assert!(has("blk.3.attn_q.weight") && !has("blk.3.ssm_a"));
            let q = plan
                .iter()
                .find(|t| t.name == "blk.3.attn_q.weight")
                .unwrap();
            assert_eq!(q.shape, [2 * 16 * 256, p.dims.hidden], "{name}");
        }
    }

    #[test]
    fn gemma4_presets_have_their_layer_types_and_parameter_counts() {
        // Google's model cards: 26B-A4B 25.2 B parameters; E4B 8 B with embeddings, of which
        // ~0.45 B are its vision and audio encoders (not in a text model).
        for (name, low, high) in [
            ("gemma4-e4b:q4_k_m", 7_400_000_000usize, 7_500_000_000usize),
            ("gemma4-26b-a4b:q4_k_m", 25_000_000_000, 25_400_000_000),
        ] {
            let p = parse(name).unwrap().preset;
            let plan = plan_of(&p, true, true);
            let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
            assert!((low..high).contains(&params), "{name}: {params}");
            let shape = |n: &str| plan.iter().find(|t| t.name == n).map(|t| t.shape.clone());
            // Block 4 slides (heads 256 wide), block 5 attends to everything (512 wide).
            assert_eq!(shape("blk.4.attn_q.weight").unwrap()[0], p.dims.heads * 256);
            assert_eq!(shape("blk.5.attn_q.weight").unwrap()[0], p.dims.heads * 512);
        }
        let p = parse("gemma4-e4b:q4_k_m").unwrap().preset;
        let plan = plan_of(&p, true, true);
        let has = |n: &str| plan.iter().any(|t| t.name == n);
        assert!(has("blk.23.attn_k.weight") && !has("blk.24.attn_k.weight"));
        assert!(has("per_layer_token_embd.weight") && has("blk.41.inp_gate.weight"));
        let p = parse("gemma4-26b-a4b:q4_k_m").unwrap().preset;
        let plan = plan_of(&p, true, true);
        let has = |n: &str| plan.iter().any(|t| t.name == n);
        assert!(has("blk.4.attn_v.weight") && !has("blk.5.attn_v.weight"));
        assert!(has("blk.0.ffn_gate_up_exps.weight") && !has("blk.0.inp_gate.weight"));
    }

    #[test]
    fn gpt_oss_20b_has_its_published_size_and_mxfp4_experts() {
        let c = parse("gpt-oss-20b:mxfp4").unwrap();
        let p = c.preset;
        let plan = plan_of(&p, false, false);
        let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
        // gpt-oss-20b: 20.9 B parameters (3.6 B active).
        assert!(
            (20_800_000_000..21_000_000_000).contains(&params),
            "{params}"
        );
        let ty = |name: &str| {
            let t = plan.iter().find(|t| t.name == name).unwrap();
            (t.shape.clone(), c.mix.type_for(t, 24))
        };
        assert_eq!(
            ty("blk.0.ffn_gate_exps.weight"),
            (vec![32, 2880, 2880], Stored::Own(BlockType::Mxfp4))
        );
        assert_eq!(
            ty("blk.0.attn_q.weight"),
            (vec![4096, 2880], Stored::Ggml(GgmlDType::Q8_0))
        );
        assert_eq!(
            ty("blk.0.ffn_down_exps.bias"),
            (vec![32, 2880], Stored::Ggml(GgmlDType::F32))
        );
        assert_eq!(ty("output.weight").1, Stored::Ggml(GgmlDType::Q8_0));
        let bytes: usize = plan
            .iter()
            .map(|t| {
                c.mix
                    .type_for(t, 24)
                    .bytes(t.shape.iter().product())
                    .unwrap()
            })
            .sum();
        // ggml-org's gpt-oss-20b-mxfp4.gguf: 12.1 GB.
        assert!((11_500_000_000..12_500_000_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn q4_k_m_gives_more_bits_where_llama_quantize_does() {
        let m = parse("llama-8b:q4_k_m").unwrap().mix;
        let v = |layer| Planned {
            name: String::new(),
            shape: vec![1024, 4096],
            role: Role::AttnV,
            layer: Some(layer),
        };
        let six: Vec<usize> = (0..32)
            .filter(|&l| m.type_for(&v(l), 32) == Stored::Ggml(GgmlDType::Q6K))
            .collect();
        assert_eq!(
            six,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }
}
