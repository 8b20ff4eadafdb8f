//! Gemma 4's configuration: read from `config.json` (`Gemma4TextConfig`, with its defaults)
//! and from llama.cpp's GGUF keys, checked once, and written back as `config.json` keys on
//! export. Every block is described on its own ([`LayerSpec`]): its attention type, head
//! width, KV heads, MLP width and where its keys and values come from.

use serde_json::{json, Map, Value as Json};

use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::models::assembly::gguf_vocab_size;
use crate::models::rope_config::{RopeConfig, RopeScaling};
use crate::models::values::{self, refuse_gguf, refuse_hf, HfRefusal};
use crate::{Error, Result};

const ARCH: &str = "gemma4";

/// `config.json` values `Gemma4TextConfig` accepts but this build does not implement.
const HF_REFUSED: &[HfRefusal] = &[
    HfRefusal {
        key: "hidden_activation",
        accepted: &["\"gelu_pytorch_tanh\""],
        supported: "gelu_pytorch_tanh",
    },
    HfRefusal {
        // "vision" makes image tokens attend both ways; text alone stays causal.
        key: "use_bidirectional_attention",
        accepted: &["\"vision\""],
        supported: "null or \"vision\" (causal attention over text)",
    },
    HfRefusal {
        key: "attention_bias",
        accepted: &["false"],
        supported: "false",
    },
];

/// Where a block's keys and values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKv {
    /// Its own key and value projections.
    Own,
    /// Its own key projection, whose output serves as the values (`attention_k_eq_v`).
    KeysAsValues,
    /// The keys and values of this earlier block (`num_kv_shared_layers`).
    SharedWith(usize),
}

/// One block's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Sliding-window attention (else full attention).
    pub sliding: bool,
    /// Width of one head.
    pub head_dim: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// MLP width (twice `intermediate_size` in KV-sharing blocks with `use_double_wide_mlp`).
    pub ffn: usize,
    /// Where its keys and values come from.
    pub kv: LayerKv,
}

/// The per-layer input embeddings (`hidden_size_per_layer_input`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerLayerInput {
    /// Width of one block's input.
    pub width: usize,
    /// Rows of their embedding table (`vocab_size_per_layer_input`).
    pub vocab: usize,
}

/// The mixture of experts beside each block's MLP (`enable_moe_block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Experts {
    /// Experts per block.
    pub n_experts: usize,
    /// Experts each token uses.
    pub n_used: usize,
    /// Width of one expert.
    pub ffn: usize,
}

/// Gemma 4's configuration; every default is explicit in `from_gguf` and `from_hf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Model width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Every block, in order.
    pub layers: Vec<LayerSpec>,
    /// Output rows.
    pub vocab_size: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Window of sliding-window blocks (each query sees itself and `window - 1` before it).
    pub sliding_window: usize,
    /// RoPE of sliding-window blocks.
    pub rope_sliding: RopeConfig,
    /// RoPE of full-attention blocks (proportional in the released models; in GGUF the
    /// file's `rope_freqs` carries it).
    pub rope_full: RopeConfig,
    /// Per-layer input embeddings, when the model has them.
    pub per_layer_input: Option<PerLayerInput>,
    /// Experts beside the MLP, when the model has them.
    pub experts: Option<Experts>,
    /// Soft-cap of the final logits, when set.
    pub final_softcap: Option<f64>,
    /// Set (to the file's name) when `config.json` unties the output layer (see
    /// [`crate::models::llama::Config::untied_in`]).
    pub untied_in: Option<String>,
}

/// transformers' `kv_sharing_modes`: block `i` of the last `shared` reads the keys and values
/// of the last earlier block of its type that is not itself sharing; `None` where no block
/// of that type is left to read from.
fn kv_sources(sliding: &[bool], shared: usize) -> Vec<Option<Option<usize>>> {
    let first = sliding.len().saturating_sub(shared);
    (0..sliding.len())
        .map(|i| match i < first {
            true => Some(None),
            false => (0..first)
                .rev()
                .find(|&j| sliding[j] == sliding[i])
                .map(Some),
        })
        .collect()
}

/// The blocks' key/value sources, refusing sharing that leaves a block nothing to read.
fn layer_kv(
    origin: &str,
    key: &str,
    sliding: &[bool],
    shared: usize,
    keys_as_values: impl Fn(usize) -> bool,
) -> Result<Vec<LayerKv>> {
    if shared >= sliding.len() && !sliding.is_empty() {
        return Err(values::refused(
            origin,
            key,
            shared,
            &format!(
                "fewer than the {} blocks (some must compute keys and values)",
                sliding.len()
            ),
        ));
    }
    kv_sources(sliding, shared)
        .into_iter()
        .enumerate()
        .map(|(i, source)| match source {
            Some(Some(j)) => Ok(LayerKv::SharedWith(j)),
            Some(None) if keys_as_values(i) => Ok(LayerKv::KeysAsValues),
            Some(None) => Ok(LayerKv::Own),
            None => Err(values::refused(
                origin,
                key,
                shared,
                &format!(
                    "a count that leaves an earlier {} block for block {i} to share",
                    if sliding[i] {
                        "sliding-window"
                    } else {
                        "full-attention"
                    }
                ),
            )),
        })
        .collect()
}

impl Config {
    /// Reads a Hugging Face `config.json` (`gemma4_text`; for a multimodal Gemma 4
    /// checkpoint, the `text_config` [`crate::models::hf_model`] found), with
    /// `Gemma4TextConfig`'s defaults.
    pub fn from_hf(h: &HfConfig) -> Result<Self> {
        refuse_hf(h, HF_REFUSED)?;
        let n_layers = h.opt_usize("num_hidden_layers")?.unwrap_or(30);
        // Layer types as listed, else five sliding to one full; the last is always full.
        let mut sliding = match values::sliding_layers(h, n_layers)? {
            Some(s) => s,
            None => (0..n_layers).map(|i| !(i + 1).is_multiple_of(6)).collect(),
        };
        if let Some(last) = sliding.last_mut() {
            *last = false;
        }
        let head_dim = h.opt_usize("head_dim")?.unwrap_or(256);
        let n_kv_heads = h.opt_usize("num_key_value_heads")?.unwrap_or(4);
        let keys_as_values = h.opt_bool("attention_k_eq_v")?.unwrap_or(false);
        let shapes = block_shapes(h, &sliding, (head_dim, n_kv_heads), keys_as_values)?;
        let shared = h.opt_usize("num_kv_shared_layers")?.unwrap_or(0);
        let kv = layer_kv(h.origin(), "num_kv_shared_layers", &sliding, shared, |i| {
            keys_as_values && !sliding[i]
        })?;
        let ffn = h.opt_usize("intermediate_size")?.unwrap_or(9216);
        let double_wide = h.opt_bool("use_double_wide_mlp")?.unwrap_or(false);
        let layers = (0..n_layers)
            .map(|i| {
                let shares = matches!(kv[i], LayerKv::SharedWith(_));
                LayerSpec {
                    sliding: sliding[i],
                    head_dim: shapes[i].0,
                    n_kv_heads: shapes[i].1,
                    ffn: if double_wide && shares { 2 * ffn } else { ffn },
                    kv: kv[i],
                }
            })
            .collect();
        let (rope_sliding, rope_full) = hf_ropes(h, &sliding)?;
        let experts = match h.opt_bool("enable_moe_block")?.unwrap_or(false) {
            true => Some(Experts {
                n_experts: h.usize("num_experts")?,
                n_used: h.usize("top_k_experts")?,
                ffn: h.usize("moe_intermediate_size")?,
            }),
            false => None,
        };
        let per_layer_input = match h.opt_usize_or("hidden_size_per_layer_input", Some(256))? {
            Some(width) if width > 0 => Some(PerLayerInput {
                width,
                vocab: h
                    .opt_usize("vocab_size_per_layer_input")?
                    .unwrap_or(262_144),
            }),
            _ => None,
        };
        let cfg = Self {
            hidden: h.opt_usize("hidden_size")?.unwrap_or(2304),
            n_heads: h.opt_usize("num_attention_heads")?.unwrap_or(8),
            layers,
            vocab_size: h.opt_usize("vocab_size")?.unwrap_or(262_144),
            context_length: h.opt_usize("max_position_embeddings")?.unwrap_or(131_072),
            eps: h.opt_positive("rms_norm_eps")?.unwrap_or(1e-6),
            sliding_window: h.opt_usize("sliding_window")?.unwrap_or(512),
            rope_sliding,
            rope_full,
            per_layer_input,
            experts,
            final_softcap: h.opt_positive("final_logit_softcapping")?,
            untied_in: match h.opt_bool("tie_word_embeddings")? {
                Some(false) => Some(h.origin().to_string()),
                _ => None,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads `gemma4.*` metadata as llama.cpp's converter writes it.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let k = |s: &str| format!("{ARCH}.{s}");
        let path = g.path().display().to_string();
        refuse_gguf(g, ARCH, values::GGUF_COMMON)?;
        if let Some(t) = g.opt_str(&k("rope.scaling.type"))?.filter(|t| *t != "none") {
            return Err(values::refused(&path, &k("rope.scaling.type"), t, "none"));
        }
        let n_layers = g.usize(&k("block_count"))?;
        let sliding = g.bools(&k("attention.sliding_window_pattern"))?;
        let head_full = g.usize(&k("attention.key_length"))?;
        // Required where there are sliding blocks, as llama.cpp requires it (a file without
        // any may still say it).
        let said = g.opt(&k("attention.key_length_swa"), Gguf::usize)?;
        let head_sliding = match (said, sliding.iter().any(|&s| s)) {
            (Some(width), _) => width,
            (None, true) => g.usize(&k("attention.key_length_swa"))?,
            (None, false) => head_full,
        };
        for (key, want) in [
            ("attention.value_length", head_full),
            ("attention.value_length_swa", head_sliding),
            // Proportional RoPE is the file's rope_freqs over the whole head.
            ("rope.dimension_count", head_full),
            ("rope.dimension_count_swa", head_sliding),
        ] {
            if let Some(d) = g.opt(&k(key), Gguf::usize)?.filter(|&d| d != want) {
                return Err(values::refused(
                    &path,
                    &k(key),
                    d,
                    &format!("{want}, the head width"),
                ));
            }
        }
        if sliding.len() != n_layers {
            return Err(Error::BadMetadata {
                key: k("attention.sliding_window_pattern"),
                expected: "one flag per block",
                found: format!("{} flags for {n_layers} blocks", sliding.len()),
            });
        }
        let kv_heads = g.per_layer(&k("attention.head_count_kv"), n_layers)?;
        let ffn = g.per_layer(&k("feed_forward_length"), n_layers)?;
        let shared = g
            .opt(&k("attention.shared_kv_layers"), Gguf::usize)?
            .unwrap_or(0);
        // llama.cpp's graph: a block without its own value projection uses its keys.
        let kv = layer_kv(
            &path,
            &k("attention.shared_kv_layers"),
            &sliding,
            shared,
            |i| !g.has_tensor(&format!("blk.{i}.attn_v.weight")),
        )?;
        let layers = (0..n_layers)
            .map(|i| LayerSpec {
                sliding: sliding[i],
                head_dim: if sliding[i] { head_sliding } else { head_full },
                n_kv_heads: kv_heads[i],
                ffn: ffn[i],
                kv: kv[i],
            })
            .collect();
        let experts = match g.opt(&k("expert_count"), Gguf::usize)?.unwrap_or(0) {
            0 => None,
            n_experts => Some(Experts {
                n_experts,
                n_used: g.usize(&k("expert_used_count"))?,
                ffn: g.usize(&k("expert_feed_forward_length"))?,
            }),
        };
        let per_layer_input = match g
            .opt(&k("embedding_length_per_layer_input"), Gguf::usize)?
            .unwrap_or(0)
        {
            0 => None,
            width => Some(PerLayerInput {
                width,
                vocab: g
                    .tensor_shape("per_layer_token_embd.weight")
                    .and_then(|s| s.first().copied())
                    .ok_or_else(|| Error::MissingTensor {
                        name: "model.embed_tokens_per_layer.weight".into(),
                        stored: "per_layer_token_embd.weight".into(),
                    })?,
            }),
        };
        let sliding_window = match sliding.iter().any(|&s| s) {
            true => g.usize(&k("attention.sliding_window"))?,
            false => g
                .opt(&k("attention.sliding_window"), Gguf::usize)?
                .unwrap_or(1),
        };
        let cfg = Self {
            hidden: g.usize(&k("embedding_length"))?,
            n_heads: g.usize(&k("attention.head_count"))?,
            layers,
            vocab_size: gguf_vocab_size(g)?,
            context_length: g.usize(&k("context_length"))?,
            eps: values::positive(g, &k("attention.layer_norm_rms_epsilon"))?,
            sliding_window,
            rope_sliding: RopeConfig::plain(
                values::opt_positive(g, &k("rope.freq_base_swa"))?.unwrap_or(10_000.0),
            ),
            rope_full: RopeConfig::from_gguf(g, ARCH, 1_000_000.0)?,
            per_layer_input,
            experts,
            final_softcap: values::opt_positive(g, &k("final_logit_softcapping"))?,
            untied_in: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::UnsupportedConfig(format!("gemma4: {why}")));
        if self.layers.is_empty() || self.hidden == 0 || self.n_heads == 0 || self.vocab_size == 0 {
            return bad(format!("inconsistent dimensions {self:?}"));
        }
        if self.sliding_window == 0 {
            return bad(
                "sliding_window 0 leaves a query nothing to attend to; supported: a \
                        window of at least 1"
                    .into(),
            );
        }
        for (i, l) in self.layers.iter().enumerate() {
            let fits = l.head_dim > 0
                && l.head_dim.is_multiple_of(2)
                && l.n_kv_heads > 0
                && self.n_heads.is_multiple_of(l.n_kv_heads)
                && l.ffn > 0;
            if !fits {
                return bad(format!("block {i} has inconsistent dimensions {l:?}"));
            }
            // One RoPE per layer type: every block of a type has the same head width.
            let first = self.layers.iter().find(|o| o.sliding == l.sliding);
            if first.is_some_and(|f| f.head_dim != l.head_dim) {
                return bad(format!(
                    "block {i}'s heads are {} wide, other blocks of its type differ; \
                     supported: one head width per layer type",
                    l.head_dim
                ));
            }
            if let LayerKv::SharedWith(j) = l.kv {
                let source = &self.layers[j];
                let same = source.sliding == l.sliding && source.n_kv_heads == l.n_kv_heads;
                if j >= i || !same || matches!(source.kv, LayerKv::SharedWith(_)) {
                    return bad(format!(
                        "block {i} shares the keys and values of block {j}, which is not an \
                         earlier block of its type and shape"
                    ));
                }
            }
        }
        if let Some(e) = self.experts {
            if e.n_experts == 0 || e.ffn == 0 || e.n_used == 0 || e.n_used > e.n_experts {
                return bad(format!(
                    "{} of {} experts of width {} per token; supported: 1 to {} experts",
                    e.n_used, e.n_experts, e.ffn, e.n_experts
                ));
            }
        }
        Ok(())
    }
}

/// Each block's `(head_dim, num_key_value_heads)`: transformers' `per_layer_config` when the
/// file has one (how transformers 5.25 saves), else `global_head_dim` (512) on full-attention
/// blocks and, with `attention_k_eq_v`, `num_global_key_value_heads` (how the released
/// checkpoints say it).
fn block_shapes(
    h: &HfConfig,
    sliding: &[bool],
    (head_dim, n_kv_heads): (usize, usize),
    keys_as_values: bool,
) -> Result<Vec<(usize, usize)>> {
    let mut shapes = vec![(head_dim, n_kv_heads); sliding.len()];
    let Some(per_layer) = h.get("per_layer_config").filter(|v| !v.is_null()) else {
        let global_head = h.opt_usize("global_head_dim")?.unwrap_or(512);
        let global_kv = match keys_as_values {
            true => h.opt_usize("num_global_key_value_heads")?,
            false => None,
        };
        for (s, &sl) in shapes.iter_mut().zip(sliding) {
            if !sl {
                *s = (global_head, global_kv.unwrap_or(n_kv_heads));
            }
        }
        return Ok(shapes);
    };
    let bad = |key: String, why: String| Error::MalformedConfig {
        file: h.origin().to_string(),
        key: format!("per_layer_config.{key}: "),
        why,
    };
    let Some(map) = per_layer.as_object() else {
        return Err(bad(String::new(), format!("{per_layer} is not an object")));
    };
    for (layer, overrides) in map {
        let i = layer
            .parse::<usize>()
            .ok()
            .filter(|&i| i < sliding.len())
            .ok_or_else(|| bad(layer.clone(), "is not the index of a block".into()))?;
        let Some(overrides) = overrides.as_object() else {
            return Err(bad(layer.clone(), format!("{overrides} is not an object")));
        };
        for (key, v) in overrides {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(format!("{layer}.{key}"), format!("{v} is not a count")));
            match key.as_str() {
                "head_dim" => shapes[i].0 = n?,
                "num_key_value_heads" => shapes[i].1 = n?,
                _ => {
                    return Err(values::refused(
                        h.origin(),
                        &format!("per_layer_config.{layer}.{key}"),
                        v,
                        "per-block head_dim and num_key_value_heads",
                    ))
                }
            }
        }
    }
    Ok(shapes)
}

/// The RoPE of sliding-window and of full-attention blocks: transformers 5's per-layer-type
/// `rope_parameters`, else `Gemma4TextConfig`'s defaults (10k; proportional over a quarter
/// of each head, 1M).
fn hf_ropes(h: &HfConfig, sliding: &[bool]) -> Result<(RopeConfig, RopeConfig)> {
    let defaults = (
        RopeConfig::plain(10_000.0),
        RopeConfig {
            base: 1_000_000.0,
            scaling: RopeScaling::Proportional {
                partial: 0.25,
                factor: 1.0,
            },
        },
    );
    if h.get("rope_parameters").is_none_or(|v| v.is_null()) {
        return Ok(defaults);
    }
    let read = |kind: &str, default: RopeConfig, present: bool| -> Result<RopeConfig> {
        if !present {
            return Ok(default);
        }
        RopeConfig::from_hf_layer_type(h, kind, default.base)?.ok_or_else(|| {
            Error::MalformedConfig {
                file: h.origin().to_string(),
                key: "rope_parameters: ".into(),
                why: "not given per layer type (sliding_attention, full_attention)".into(),
            }
        })
    };
    Ok((
        read("sliding_attention", defaults.0, sliding.iter().any(|&s| s))?,
        read("full_attention", defaults.1, sliding.iter().any(|&s| !s))?,
    ))
}

/// The `config.json` keys of a Gemma 4 GGUF that are no plain GGUF key (see
/// [`crate::models::Quirks::gguf_hf_config`]): layer types, sliding blocks' head width,
/// per-block head widths and KV heads, KV sharing, keys as values, double-wide MLPs, per-layer
/// inputs, experts, and both RoPEs (the full blocks' proportional share stays in the
/// exported `rope_freqs`).
pub fn hf_config_from_gguf(g: &Gguf, arch: &str, c: &mut Map<String, Json>) -> Result<()> {
    let cfg = Config::from_gguf(g)?;
    let k = |s: &str| format!("{arch}.{s}");
    let first_sliding = cfg.layers.iter().find(|l| l.sliding);
    let first_full = cfg.layers.iter().find(|l| !l.sliding);
    let Some(base) = first_sliding.or(first_full) else {
        return Ok(());
    };
    let layer_types: Vec<&str> = cfg
        .layers
        .iter()
        .map(|l| match l.sliding {
            true => "sliding_attention",
            false => "full_attention",
        })
        .collect();
    let per_layer: Map<String, Json> = cfg
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| (l.head_dim, l.n_kv_heads) != (base.head_dim, base.n_kv_heads))
        .map(|(i, l)| {
            let o = json!({"head_dim": l.head_dim, "num_key_value_heads": l.n_kv_heads});
            (i.to_string(), o)
        })
        .collect();
    let unsupported = |what: &str| {
        Error::UnsupportedConfig(format!(
            "{}: export of {what} is not supported; supported: what transformers' \
             Gemma4TextConfig can say",
            g.path().display()
        ))
    };
    // transformers says "keys as values" for every full block or none.
    let own: Vec<&LayerSpec> = cfg
        .layers
        .iter()
        .filter(|l| !matches!(l.kv, LayerKv::SharedWith(_)))
        .collect();
    let kev = own.iter().any(|l| l.kv == LayerKv::KeysAsValues);
    if own
        .iter()
        .any(|l| (l.kv == LayerKv::KeysAsValues) != (kev && !l.sliding))
    {
        return Err(unsupported(
            "values from keys on some blocks but not on others",
        ));
    }
    let ffn = base.ffn;
    let double = cfg.layers.iter().any(|l| l.ffn != ffn);
    if cfg.layers.iter().any(|l| {
        let shares = matches!(l.kv, LayerKv::SharedWith(_));
        l.ffn != if double && shares { 2 * ffn } else { ffn }
    }) {
        return Err(unsupported(
            "MLP widths other than double in KV-sharing blocks",
        ));
    }
    let shared = g
        .opt(&k("attention.shared_kv_layers"), Gguf::usize)?
        .unwrap_or(0);
    let rope = |r: &RopeConfig| json!({"rope_type": "default", "rope_theta": r.base});
    let mut set = |key: &str, v: Json| {
        c.insert(key.into(), v);
    };
    set("num_hidden_layers", json!(cfg.layers.len()));
    set("layer_types", json!(layer_types));
    set("head_dim", json!(base.head_dim));
    set("num_key_value_heads", json!(base.n_kv_heads));
    set("per_layer_config", Json::Object(per_layer));
    set("intermediate_size", json!(ffn));
    set("use_double_wide_mlp", json!(double));
    set("attention_k_eq_v", json!(kev));
    set("num_kv_shared_layers", json!(shared));
    set("sliding_window", json!(cfg.sliding_window));
    set(
        "rope_parameters",
        json!({"sliding_attention": rope(&cfg.rope_sliding),
               "full_attention": rope(&cfg.rope_full)}),
    );
    match cfg.per_layer_input {
        Some(p) => {
            set("hidden_size_per_layer_input", json!(p.width));
            set("vocab_size_per_layer_input", json!(p.vocab));
        }
        None => set("hidden_size_per_layer_input", json!(0)),
    }
    set("enable_moe_block", json!(cfg.experts.is_some()));
    if let Some(e) = cfg.experts {
        set("num_experts", json!(e.n_experts));
        set("top_k_experts", json!(e.n_used));
        set("moe_intermediate_size", json!(e.ffn));
    }
    set("hidden_activation", json!("gelu_pytorch_tanh"));
    c.remove("rope_theta");
    c.remove("num_experts_per_tok");
    Ok(())
}
