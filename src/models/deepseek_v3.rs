//! DeepSeek-V3 and DeepSeek-V2 (HF `DeepseekV3ForCausalLM`, `DeepseekV2ForCausalLM`; GGUF
//! `deepseek2`, which llama.cpp's converter writes for both).
//!
//! Pre-norm blocks like llama's, with multi-head latent attention ([`super::layers::mla`]:
//! low-rank query (`q_lora_rank`, or a plain projection when null, as DeepSeek-V2-Lite), one
//! cached latent per position, the absorbed form for every pass) and, after the first
//! `first_k_dense_replace` dense blocks, DeepSeek's mixture of experts
//! ([`super::layers::grouped_moe`]: sigmoid scores, a selection-only bias, group-limited
//! top-k, normalised and scaled weights, shared experts). RoPE covers only the
//! `qk_rope_head_dim` part of each head, in pairs `(2i, 2i + 1)` (`rope_interleave`, the
//! GGUF's layout too); with YaRN the score scale gains `mscale(factor, mscale_all_dim)²`.
//!
//! DeepSeek-V2 (V2, V2-Lite, V2.5 as published) is the same decoder; only `config.json`
//! reads differently (`DeepseekV2Config`): softmax scores, no selection bias, no
//! normalisation, `topk_method` `greedy` (one group) or `group_limited_greedy` (groups
//! ranked by their best score, not by their two best), RoPE always in pairs, other defaults.
//!
//! GGUF: the converter splits `kv_b_proj` into `attn_k_b` (transposed) and `attn_v_b`, which
//! the layer reads as they are; it writes the router's scoring as `expert_gating_func` (a
//! file without it is softmax, llama.cpp's rule for early DeepSeek-V2 files; a softmax file is
//! a V2, whose groups rank by their best score as in the reference, where llama.cpp ranks
//! every file's by their two best) and `0.1 · mscale_all_dim` as
//! `rope.scaling.yarn_log_multiplier`. Multi-token-prediction blocks
//! (`num_nextn_predict_layers`, `nextn_predict_layers`) are skipped: they serve speculative
//! decoding, which is not implemented. References: HF `modeling_deepseek_v3.py`,
//! `configuration_deepseek_v3.py`, `modeling_deepseek_v2.py`, `configuration_deepseek_v2.py`;
//! llama.cpp `src/models/deepseek2.cpp`, `conversion/deepseek.py`.

use candle_core::Tensor;

use super::assembly::{output_layer, Dims};
use super::layers::embedding::Embedding;
use super::layers::grouped_moe::{self, Ffn};
use super::layers::linear::Linear;
use super::layers::mla::Mla;
use super::layers::norm::RmsNorm;
use super::layers::rope::{Rope, Style, Tables};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::engine::cache::Cache;
use crate::formats::weights::{Vb, WeightFormat};
use crate::kernels::cpu::host;
use crate::Result;

mod config;
pub use config::Config;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "deepseek_v3",
    kind: Kind::Moe,
    hf_architectures: &["DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM"],
    gguf_architectures: &["deepseek2"],
    gguf_variants: &[],
    gguf_names: NAMES,
    quirks: Quirks {
        gguf_hf_config: Some(config::hf_config_from_gguf),
        ..Quirks::NONE
    },
    default_template: "chatml",
    hf_model_type: "deepseek_v3",
    hf_config_keys: &[
        ("q_lora_rank", "attention.q_lora_rank"),
        ("kv_lora_rank", "attention.kv_lora_rank"),
        ("qk_rope_head_dim", "rope.dimension_count"),
        ("qk_head_dim", "attention.key_length_mla"),
        ("v_head_dim", "attention.value_length_mla"),
        ("n_routed_experts", "expert_count"),
        ("n_shared_experts", "expert_shared_count"),
        ("first_k_dense_replace", "leading_dense_block_count"),
        ("n_group", "expert_group_count"),
        ("topk_group", "expert_group_used_count"),
        ("routed_scaling_factor", "expert_weights_scale"),
        ("norm_topk_prob", "expert_weights_norm"),
        // Written as transformers' name for the file's router by `hf_config_from_gguf`.
        ("scoring_func", "expert_gating_func"),
    ],
    // What the GGUF reader takes for an absent key where transformers' class differs.
    hf_config_defaults: &[
        ("q_lora_rank", "null"),
        ("first_k_dense_replace", "0"),
        ("n_group", "1"),
        ("topk_group", "1"),
        ("routed_scaling_factor", "1.0"),
        ("norm_topk_prob", "false"),
    ],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q_a.weight",
            "attn_q_a_norm.weight",
            "attn_q_b.weight",
            "attn_kv_a_mqa.weight",
            "attn_kv_a_norm.weight",
            "attn_k_b.weight",
            "attn_v_b.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "ffn_gate_inp.weight",
            "exp_probs_b.bias",
            "ffn_gate_exps.weight",
            "ffn_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_gate_shexp.weight",
            "ffn_up_shexp.weight",
            "ffn_down_shexp.weight",
        ],
        metadata: &[
            ("attention.q_lora_rank", 32),
            ("attention.kv_lora_rank", 32),
            ("attention.key_length_mla", 40),
            ("attention.value_length_mla", 16),
            ("rope.dimension_count", 8),
            ("leading_dense_block_count", 1),
            ("expert_count", 4),
            ("expert_used_count", 2),
            ("expert_group_count", 2),
            ("expert_group_used_count", 1),
            ("expert_gating_func", 2),
            ("expert_shared_count", 1),
            ("expert_feed_forward_length", 32),
        ],
        fused_gate_up: false,
    },
};

/// Name rows beyond the common table: MLA's projections, the router's selection bias and
/// the shared experts.
const NAMES: &[(&str, &str)] = &[
    (
        "model.layers.{}.self_attn.q_a_proj.weight",
        "blk.{}.attn_q_a.weight",
    ),
    (
        "model.layers.{}.self_attn.q_a_layernorm.weight",
        "blk.{}.attn_q_a_norm.weight",
    ),
    (
        "model.layers.{}.self_attn.q_b_proj.weight",
        "blk.{}.attn_q_b.weight",
    ),
    (
        "model.layers.{}.self_attn.kv_a_proj_with_mqa.weight",
        "blk.{}.attn_kv_a_mqa.weight",
    ),
    (
        "model.layers.{}.self_attn.kv_a_layernorm.weight",
        "blk.{}.attn_kv_a_norm.weight",
    ),
    (
        "model.layers.{}.self_attn.kv_b_proj.weight",
        "blk.{}.attn_kv_b.weight",
    ),
    (
        "model.layers.{}.self_attn.k_b_proj.weight",
        "blk.{}.attn_k_b.weight",
    ),
    (
        "model.layers.{}.self_attn.v_b_proj.weight",
        "blk.{}.attn_v_b.weight",
    ),
    (
        "model.layers.{}.mlp.gate.e_score_correction_bias",
        "blk.{}.exp_probs_b.bias",
    ),
    (
        "model.layers.{}.mlp.shared_experts.gate_proj.weight",
        "blk.{}.ffn_gate_shexp.weight",
    ),
    (
        "model.layers.{}.mlp.shared_experts.up_proj.weight",
        "blk.{}.ffn_up_shexp.weight",
    ),
    (
        "model.layers.{}.mlp.shared_experts.down_proj.weight",
        "blk.{}.ffn_down_shexp.weight",
    ),
];

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g),
        ConfigSource::Hf(h) => Config::from_hf(h),
    }
}

/// A block's token mixer: DeepSeek's latent attention, or the grouped-query attention of
/// GLM-4.x MoE, which reuses the rest of this decoder.
pub(super) trait Mixer {
    /// Mixes `x` (`(1, L, hidden)`) at the cache position, storing into layer `layer`.
    fn mix(
        &self,
        x: &Tensor,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor>;
    /// What the layer keeps in the cache.
    fn cache_kind(&self) -> LayerKind;
}

impl Mixer for Mla {
    fn mix(
        &self,
        x: &Tensor,
        rope: (&Rope, &Tables),
        cache: &mut Cache,
        layer: usize,
    ) -> Result<Tensor> {
        self.forward(x, rope, cache, layer)
    }

    fn cache_kind(&self) -> LayerKind {
        Mla::cache_kind(self)
    }
}

/// One block: the token mixer, then the dense MLP or the experts, each pre-normed.
#[derive(Clone, Debug)]
struct Block<A> {
    attn_norm: RmsNorm,
    attn: A,
    mlp_norm: RmsNorm,
    ffn: Ffn,
}

/// What the DeepSeek-V3 and GLM-4.x MoE decoders share besides the token mixer.
pub(super) struct Shape<'a> {
    /// Sizes.
    pub dims: &'a Dims,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Width of the dense MLPs.
    pub ffn: usize,
    /// Leading blocks with a dense MLP.
    pub first_dense: usize,
    /// The experts of the other blocks.
    pub moe: &'a grouped_moe::Config,
    /// Where an untied output layer is, if not tied to the embedding.
    pub untied_in: Option<&'a str>,
}

/// The decoder of both families: embedding, pre-norm blocks of a token mixer `A` and a dense
/// MLP or experts, final norm, output layer.
pub(super) struct Decoder<A> {
    embed: Embedding,
    blocks: Vec<Block<A>>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    info: ModelInfo,
}

impl<A: Mixer> Decoder<A> {
    /// Builds the decoder from `vb` (rooted at the checkpoint top), each block's mixer by
    /// `mixer` from its `self_attn` prefix; multi-token-prediction blocks past the model's
    /// own are left unread.
    pub(super) fn load(
        vb: &Vb,
        s: &Shape,
        (rope, info): (Rope, ModelInfo),
        mixer: impl Fn(&Vb) -> Result<A>,
    ) -> Result<Self> {
        let d = s.dims;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[d.vocab_size, d.hidden])?;
        let lm_head = output_layer(vb, &table, (d.hidden, d.vocab_size), s.untied_in)?;
        let blocks = (0..d.n_layers)
            .map(|i| {
                let b = m.pp("layers").pp(i);
                let at = (i, s.first_dense);
                Ok(Block {
                    attn_norm: RmsNorm::load(&b.pp("input_layernorm"), d.hidden, s.eps, false)?,
                    attn: mixer(&b.pp("self_attn"))?,
                    mlp_norm: RmsNorm::load(
                        &b.pp("post_attention_layernorm"),
                        d.hidden,
                        s.eps,
                        false,
                    )?,
                    ffn: Ffn::load(&b.pp("mlp"), d.hidden, at, s.ffn, s.moe)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        super::assembly::ignore_blocks_from(vb, d.n_layers);
        Ok(Self {
            embed: Embedding::new(table, None),
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), d.hidden, s.eps, false)?,
            lm_head,
            rope,
            info,
        })
    }

    /// The forward pass of [`CausalLm::forward`].
    pub(super) fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let tables = self.rope.tables(ctx.cache.pos(), l, tokens.device())?;
        // 1. Embed: (1, L) -> (1, L, hidden).
        let mut x = self.embed.forward(tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // 2. Token mixer (latent or grouped-query attention) with residual.
            let a = b.attn.mix(
                &b.attn_norm.forward(&x)?,
                (&self.rope, &tables),
                ctx.cache,
                i,
            )?;
            let h = host::add(&x, &a)?;
            // 3. Dense MLP or experts with residual.
            x = host::add(&h, &b.ffn.forward(&b.mlp_norm.forward(&h)?)?)?;
            ctx.trace(i, "block_out", &x);
        }
        // 4. Last position only: norm and output layer -> (vocab).
        super::layers::head::last_position_logits(&self.norm, &self.lm_head, &x)
    }

    /// The model's description.
    pub(super) fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Each block's cache entry.
    pub(super) fn cache_layout(&self) -> Vec<LayerKind> {
        self.blocks.iter().map(|b| b.attn.cache_kind()).collect()
    }
}

/// A DeepSeek-V3 model.
pub struct Model(Decoder<Mla>);

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let format = vb.weights().format();
        let style = match cfg.rope_interleave || format == WeightFormat::Gguf {
            true => Style::Interleaved,
            false => Style::HalfSplit,
        };
        let rope = cfg.rope.build(vb, cfg.mla.qk_rope, style)?;
        let shape = Shape {
            dims: &cfg.dims,
            eps: cfg.eps,
            ffn: cfg.ffn,
            first_dense: cfg.first_dense,
            moe: &cfg.moe,
            untied_in: cfg.untied_in.as_deref(),
        };
        let info = ModelInfo::new(&SPEC, cfg.dims);
        let mixer = |b: &Vb| Mla::load(b, &cfg.mla);
        Ok(Self(Decoder::load(vb, &shape, (rope, info), mixer)?))
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        self.0.forward(tokens, ctx)
    }

    fn info(&self) -> &ModelInfo {
        self.0.info()
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.0.cache_layout()
    }

    /// One compressed latent per position (`kv_lora_rank + rope` values), not keys and values.
    fn kv_elements_per_position(&self) -> Vec<usize> {
        let i = self.info();
        vec![i.head_dim; i.n_layers]
    }
}

#[cfg(test)]
mod tests;
