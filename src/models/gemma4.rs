//! Gemma 4 text models (HF `Gemma4ForCausalLM`, and the `text_config` of
//! `Gemma4ForConditionalGeneration`; GGUF `gemma4`): E2B, E4B, 26B-A4B, 31B.
//!
//! Gemma 3's sandwich-normed blocks (GeGLU, per-head Q/K norm, embeddings scaled by
//! `sqrt(hidden)`, optional final soft-cap) with these differences, all read from the config
//! ([`config`]) and refused where not implemented:
//! - plain RMSNorm (`x̂ · w`, no `1 +`); attention scores unscaled (the Q/K norms do it);
//!   values RMS-normed without weights;
//! - sliding-window and full-attention blocks (`layer_types`, 5:1 by default, the last one
//!   full) with their own head widths (`head_dim`, `global_head_dim` or transformers'
//!   `per_layer_config`) and KV heads, and their own RoPE: default on sliding blocks,
//!   proportional on full ones (a quarter of each head turns, at the whole head's
//!   frequencies);
//! - `attention_k_eq_v`: full blocks project keys only and use them, before their norm, as
//!   values (with `num_global_key_value_heads` KV heads);
//! - `num_kv_shared_layers`: the last blocks read the keys and values of the last earlier
//!   block of their type (the cache stores nothing for them), and with
//!   `use_double_wide_mlp` their MLP is twice as wide;
//! - per-layer inputs (`hidden_size_per_layer_input`): a second embedding table and a
//!   projection of the embeddings give each block a small input, which gates a residual
//!   branch after the MLP;
//! - `enable_moe_block`: beside the MLP, a mixture of experts on the same residual with its
//!   own norms and a scaled router ([`moe::ScaledRouter`]), the two outputs summed;
//! - each block's output is scaled by its `layer_scalar`.
//!
//! GGUF (llama.cpp's converter): norms stored as they are; `sliding_window_pattern`, KV heads
//! and MLP widths per block; the full blocks' head width as `attention.key_length` and the
//! sliding ones' as `attention.key_length_swa`; proportional RoPE as the `rope_freqs` tensor
//! (1 for turning pairs, 1e30 for the rest); a block without `attn_v` uses its keys as values;
//! the router's and experts' scales as `ffn_gate_inp.scale` and `ffn_down_exps.scale`.
//! References: HF `modeling_gemma4.py`, `configuration_gemma4.py`; llama.cpp
//! `src/models/gemma4.cpp`.

mod config;

use candle_core::{DType, Tensor};

pub use self::config::{Config, Experts as ExpertShape, LayerKv, LayerSpec, PerLayerInput};
use super::assembly::{output_layer, Dims};
use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::head::last_position_logits;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::moe::{self, ScaledRouter};
use super::layers::norm::RmsNorm;
use super::layers::qkv::KvSource;
use super::layers::rope::{Rope, Tables};
use super::{
    CausalLm, ConfigSource, FamilySpec, Forward, Kind, LayerKind, ModelInfo, Quirks, TinyConfig,
};
use crate::formats::weights::Vb;
use crate::Result;

/// The registry entry.
pub static SPEC: FamilySpec = FamilySpec {
    id: "gemma4",
    // Per checkpoint: `ModelInfo::kind` says Moe for the 26B-A4B.
    kind: Kind::Dense,
    hf_architectures: &["Gemma4ForCausalLM"],
    gguf_architectures: &["gemma4"],
    gguf_variants: &[],
    gguf_names: &[
        (
            "model.embed_tokens_per_layer.weight",
            "per_layer_token_embd.weight",
        ),
        (
            "model.per_layer_model_projection.weight",
            "per_layer_model_proj.weight",
        ),
        (
            "model.per_layer_projection_norm.weight",
            "per_layer_proj_norm.weight",
        ),
        (
            "model.layers.{}.per_layer_input_gate.weight",
            "blk.{}.inp_gate.weight",
        ),
        (
            "model.layers.{}.per_layer_projection.weight",
            "blk.{}.proj.weight",
        ),
        (
            "model.layers.{}.post_per_layer_input_norm.weight",
            "blk.{}.post_norm.weight",
        ),
        (
            "model.layers.{}.layer_scalar",
            "blk.{}.layer_output_scale.weight",
        ),
        (
            "model.layers.{}.post_attention_layernorm.weight",
            "blk.{}.post_attention_norm.weight",
        ),
        (
            "model.layers.{}.pre_feedforward_layernorm.weight",
            "blk.{}.ffn_norm.weight",
        ),
        (
            "model.layers.{}.post_feedforward_layernorm.weight",
            "blk.{}.post_ffw_norm.weight",
        ),
        (
            "model.layers.{}.post_feedforward_layernorm_1.weight",
            "blk.{}.post_ffw_norm_1.weight",
        ),
        (
            "model.layers.{}.post_feedforward_layernorm_2.weight",
            "blk.{}.post_ffw_norm_2.weight",
        ),
        (
            "model.layers.{}.pre_feedforward_layernorm_2.weight",
            "blk.{}.pre_ffw_norm_2.weight",
        ),
        (
            "model.layers.{}.router.proj.weight",
            "blk.{}.ffn_gate_inp.weight",
        ),
        ("model.layers.{}.router.scale", "blk.{}.ffn_gate_inp.scale"),
        (
            "model.layers.{}.router.per_expert_scale",
            "blk.{}.ffn_down_exps.scale",
        ),
        (
            "model.layers.{}.experts.gate_up_proj",
            "blk.{}.ffn_gate_up_exps.weight",
        ),
        (
            "model.layers.{}.experts.down_proj",
            "blk.{}.ffn_down_exps.weight",
        ),
    ],
    quirks: Quirks {
        gguf_hf_config: Some(config::hf_config_from_gguf),
        ..Quirks::NONE
    },
    default_template: "gemma4",
    hf_model_type: "gemma4_text",
    // Export writes Gemma 4's keys itself (`hf_config_from_gguf`).
    hf_config_keys: &[],
    hf_config_defaults: &[],
    load: |vb, src| Ok(Box::new(Model::load(vb, &config(src)?)?)),
    check: |src| config(src).map(drop),
    tiny: TinyConfig {
        // Every tensor a Gemma 4 block may hold; the metadata says which blocks hold which
        // (`synthetic::Layout::in_layer`).
        block_tensors: &[
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q_norm.weight",
            "attn_k.weight",
            "attn_k_norm.weight",
            "attn_v.weight",
            "attn_output.weight",
            "post_attention_norm.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "post_ffw_norm_1.weight",
            "ffn_gate_inp.weight",
            "ffn_gate_inp.scale",
            "pre_ffw_norm_2.weight",
            "ffn_gate_up_exps.weight",
            "ffn_down_exps.weight",
            "ffn_down_exps.scale",
            "post_ffw_norm_2.weight",
            "post_ffw_norm.weight",
            "inp_gate.weight",
            "proj.weight",
            "post_norm.weight",
            "layer_output_scale.weight",
        ],
        // Three blocks: sliding (heads 16 wide, window 3), full (32 wide, one KV head, keys
        // as values), full reading block 1's keys and values with a double-wide MLP;
        // per-layer inputs.
        metadata: &[
            ("attention.key_length", 32),
            ("attention.value_length", 32),
            ("attention.key_length_swa", 16),
            ("attention.value_length_swa", 16),
            ("attention.sliding_window", 3),
            ("attention.shared_kv_layers", 1),
            ("embedding_length_per_layer_input", 32),
            ("final_logit_softcapping", 30),
            ("synthetic.swa_period", 2),
            ("synthetic.global_kv_heads", 1),
            ("synthetic.global_k_eq_v", 1),
            ("synthetic.double_wide_shared", 1),
        ],
        fused_gate_up: false,
    },
};

fn config(src: &ConfigSource) -> Result<Config> {
    match src {
        ConfigSource::Gguf(g) => Config::from_gguf(g),
        ConfigSource::Hf(h) => Config::from_hf(h),
    }
}

/// The mixture of experts beside a block's MLP, with its norms.
#[derive(Clone, Debug)]
struct MoeBranch {
    /// Normalises the MLP's output (`post_feedforward_layernorm_1`).
    post_mlp_norm: RmsNorm,
    router: ScaledRouter,
    pre_norm: RmsNorm,
    experts: moe::Experts,
    post_norm: RmsNorm,
}

/// The per-layer input branch after a block's MLP.
#[derive(Clone, Debug)]
struct PerLayerBranch {
    gate: Linear,
    proj: Linear,
    norm: RmsNorm,
}

/// One Gemma 4 block.
#[derive(Clone, Debug)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_mlp_norm: RmsNorm,
    mlp: Mlp,
    moe: Option<MoeBranch>,
    post_mlp_norm: RmsNorm,
    per_layer: Option<PerLayerBranch>,
    /// `layer_scalar`.
    scalar: f64,
    spec: LayerSpec,
}

impl Block {
    fn load(vb: &Vb, cfg: &Config, layer: usize) -> Result<Self> {
        let spec = cfg.layers[layer].clone();
        let (hidden, eps) = (cfg.hidden, cfg.eps);
        let attn_cfg = attention::Config {
            hidden,
            n_heads: cfg.n_heads,
            n_kv_heads: spec.n_kv_heads,
            head_dim: spec.head_dim,
            scale: 1.0,
            qkv_bias: false,
            o_bias: false,
            fused_qkv: false,
            qk_norm: Some((eps, false)),
            sliding_window: spec.sliding.then_some(cfg.sliding_window),
            softcap: None,
            // llama.cpp scales Gemma 4's scores by 1, after the product.
            scale_queries: false,
        };
        let opts = attention::Options {
            kv: match spec.kv {
                LayerKv::Own => KvSource::Own,
                LayerKv::KeysAsValues => KvSource::KeysAsValues,
                LayerKv::SharedWith(_) => KvSource::Shared,
            },
            v_norm: true,
            ..Default::default()
        };
        let norm = |name: &str, dim: usize| RmsNorm::load(&vb.pp(name), dim, eps, false);
        let moe = match cfg.experts {
            Some(e) => Some(MoeBranch {
                post_mlp_norm: norm("post_feedforward_layernorm_1", hidden)?,
                router: ScaledRouter::load(&vb.pp("router"), hidden, e.n_experts, e.n_used, eps)?,
                pre_norm: norm("pre_feedforward_layernorm_2", hidden)?,
                experts: moe::Experts::load_stacked(
                    &vb.pp("experts"),
                    e.n_experts,
                    (hidden, e.ffn),
                    Activation::GeluTanh,
                )?,
                post_norm: norm("post_feedforward_layernorm_2", hidden)?,
            }),
            None => None,
        };
        let per_layer = match cfg.per_layer_input {
            Some(p) => Some(PerLayerBranch {
                gate: Linear::load(&vb.pp("per_layer_input_gate"), hidden, p.width, false)?,
                proj: Linear::load(&vb.pp("per_layer_projection"), p.width, hidden, false)?,
                norm: norm("post_per_layer_input_norm", hidden)?,
            }),
            None => None,
        };
        // A buffer in transformers (always saved); optional in llama.cpp's files.
        let scalar = match vb.contains("layer_scalar") {
            true => vb.tensor("layer_scalar", &[1])?.to_vec1::<f32>()?[0] as f64,
            false => 1.0,
        };
        Ok(Self {
            input_norm: norm("input_layernorm", hidden)?,
            attn: Attention::load_with(&vb.pp("self_attn"), &attn_cfg, opts)?,
            post_attn_norm: norm("post_attention_layernorm", hidden)?,
            pre_mlp_norm: norm("pre_feedforward_layernorm", hidden)?,
            mlp: Mlp::load(&vb.pp("mlp"), hidden, spec.ffn, Activation::GeluTanh, false)?,
            moe,
            post_mlp_norm: norm("post_feedforward_layernorm", hidden)?,
            per_layer,
            scalar,
            spec,
        })
    }

    /// The block on `x` (`(1, L, hidden)`), with its per-layer input (`(1, L, width)`).
    fn forward(
        &self,
        x: &Tensor,
        per_layer_input: Option<&Tensor>,
        rope: (&Rope, &Tables),
        ctx: &mut Forward,
        layer: usize,
    ) -> Result<Tensor> {
        // 1. Attention, normed on both sides, with residual.
        let a = self
            .attn
            .forward(&self.input_norm.forward(x)?, rope, ctx.cache, layer)?;
        let h = (x + self.post_attn_norm.forward(&a)?)?;
        // 2. GeGLU MLP and, beside it, the experts on the same residual; with residual.
        let mut f = self.mlp.forward(&self.pre_mlp_norm.forward(&h)?)?;
        if let Some(m) = &self.moe {
            let hidden = h.dim(2)?;
            let rows = h.reshape(((), hidden))?; // (L, hidden)
            let routes = m.router.route(&rows)?;
            let e = m.experts.forward(&m.pre_norm.forward(&rows)?, &routes)?;
            let e = m.post_norm.forward(&e.reshape(h.shape())?)?;
            f = (m.post_mlp_norm.forward(&f)? + e)?;
        }
        let mut x = (&h + self.post_mlp_norm.forward(&f)?)?;
        // 3. Per-layer input: gelu(gate(x)) · input, projected back, normed; with residual.
        if let (Some(p), Some(input)) = (&self.per_layer, per_layer_input) {
            let g = (p.gate.forward(&x)?.gelu()? * input)?;
            x = (&x + p.norm.forward(&p.proj.forward(&g)?)?)?;
        }
        // 4. The block's scalar.
        Ok(match self.scalar {
            1.0 => x,
            s => (x * s)?,
        })
    }
}

/// The per-layer inputs: a second embedding table and a projection of the embeddings.
#[derive(Clone, Debug)]
struct PerLayerInputs {
    embed: Embedding,
    proj: Linear,
    norm: RmsNorm,
    width: usize,
}

impl PerLayerInputs {
    /// Every block's input for `tokens` (`(1, L)`) with embeddings `x` (`(1, L, hidden)`):
    /// `(1, L, blocks, width)`.
    fn forward(&self, tokens: &Tensor, x: &Tensor, blocks: usize) -> Result<Tensor> {
        let (_, l, hidden) = x.dims3()?;
        let shape = (1, l, blocks, self.width);
        // (1, L) -> (1, L, blocks·width), scaled by sqrt(width).
        let own = self.embed.forward(tokens)?.reshape(shape)?;
        // (1, L, hidden) -> (1, L, blocks, width), scaled by hidden^-1/2 and normed per block.
        let projected = (self.proj.forward(x)? * (hidden as f64).powf(-0.5))?.reshape(shape)?;
        let projected = self.norm.forward(&projected)?;
        Ok(((projected + own)? * std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// A Gemma 4 model.
pub struct Model {
    embed: Embedding,
    per_layer: Option<PerLayerInputs>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope_sliding: Rope,
    rope_full: Rope,
    final_softcap: Option<f64>,
    info: ModelInfo,
}

impl Model {
    /// Builds the model from `vb` (rooted at the checkpoint top).
    pub fn load(vb: &Vb, cfg: &Config) -> Result<Self> {
        let style = super::rope_style(SPEC.quirks, vb.weights().format());
        let head = |sliding: bool| {
            cfg.layers
                .iter()
                .find(|l| l.sliding == sliding)
                .map_or(2, |l| l.head_dim)
        };
        // GGUF's rope_freqs (proportional RoPE) belongs to the full-attention blocks only.
        let rope_full = cfg.rope_full.build(vb, head(false), style)?;
        let rope_sliding = cfg.rope_sliding.build_plain(head(true), style)?;
        let m = vb.pp("model");
        let table = m.table("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let n = cfg.layers.len();
        let per_layer = match cfg.per_layer_input {
            Some(p) => Some(PerLayerInputs {
                embed: Embedding::new(
                    m.table("embed_tokens_per_layer.weight", &[p.vocab, n * p.width])?,
                    Some((p.width as f64).sqrt()),
                ),
                proj: Linear::load(
                    &m.pp("per_layer_model_projection"),
                    cfg.hidden,
                    n * p.width,
                    false,
                )?,
                norm: RmsNorm::load(&m.pp("per_layer_projection_norm"), p.width, cfg.eps, false)?,
                width: p.width,
            }),
            None => None,
        };
        let blocks = (0..n)
            .map(|i| Block::load(&m.pp("layers").pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let first = &cfg.layers[0];
        let mut info = ModelInfo::new(
            &SPEC,
            Dims {
                n_layers: n,
                hidden: cfg.hidden,
                n_heads: cfg.n_heads,
                n_kv_heads: first.n_kv_heads,
                head_dim: first.head_dim,
                vocab_size: cfg.vocab_size,
                context_length: cfg.context_length,
            },
        );
        if cfg.experts.is_some() {
            info.kind = Kind::Moe;
        }
        Ok(Self {
            embed: Embedding::new(table.clone(), Some((cfg.hidden as f64).sqrt())),
            per_layer,
            blocks,
            norm: RmsNorm::load(&m.pp("norm"), cfg.hidden, cfg.eps, false)?,
            lm_head: output_layer(
                vb,
                &table,
                (cfg.hidden, cfg.vocab_size),
                cfg.untied_in.as_deref(),
            )?,
            rope_sliding,
            rope_full,
            final_softcap: cfg.final_softcap,
            info,
        })
    }
}

impl CausalLm for Model {
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let (_, l) = tokens.dims2()?;
        let (pos, dev) = (ctx.cache.pos(), tokens.device());
        let sliding = self.rope_sliding.tables(pos, l, dev)?;
        let full = self.rope_full.tables(pos, l, dev)?;
        // 1. Embed and scale: (1, L) -> (1, L, hidden); per-layer inputs (1, L, blocks, w).
        let mut x = self.embed.forward(tokens)?;
        let inputs = match &self.per_layer {
            Some(p) => Some(p.forward(tokens, &x, self.blocks.len())?),
            None => None,
        };
        for (i, b) in self.blocks.iter().enumerate() {
            let rope = match b.spec.sliding {
                true => (&self.rope_sliding, &sliding),
                false => (&self.rope_full, &full),
            };
            let input = match &inputs {
                Some(t) => Some(t.narrow(2, i, 1)?.squeeze(2)?),
                None => None,
            };
            // 2. The block (attention, MLP and experts, per-layer input, scalar).
            x = b.forward(&x, input.as_ref(), rope, ctx, i)?;
            ctx.trace(i, "block_out", &x);
        }
        // 3. Last position only: norm, output layer, optional soft-cap -> (vocab).
        let logits = last_position_logits(&self.norm, &self.lm_head, &x)?.to_dtype(DType::F32)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn kv_elements_per_position(&self) -> Vec<usize> {
        // Sliding and global blocks differ in head width and KV heads.
        self.blocks
            .iter()
            .map(|b| 2 * b.spec.n_kv_heads * b.spec.head_dim)
            .collect()
    }

    fn cache_layout(&self) -> Vec<LayerKind> {
        self.blocks
            .iter()
            .map(|b| match b.spec.kv {
                LayerKv::SharedWith(j) => LayerKind::Shared(j),
                _ => b.attn.cache_kind(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
