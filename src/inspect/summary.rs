//! The summary view: format, size, architecture and whether this build can run it (and why
//! not), parameters and quant mix from the tensors, dimensions, RoPE, tokenizer, special
//! tokens, chat template, and a memory estimate. GGUF facts come from the metadata,
//! safetensors facts from `config.json` and the tokenizer files beside the weights. The
//! verdict reads the configuration as `run` does (format detection, then the family's own
//! reader, [`crate::models::FamilySpec::check`]), so a value `run` refuses is a reason here.

use serde::Serialize;
use serde_json::Value as Json;

use super::machine::Machine;
use super::memory::{self, KvShape, Memory};
use super::tensors::{self, Tensor};
use super::{hf, Model};
use crate::formats::chat_template::{ChatTemplate, Origin};
use crate::formats::detect;
use crate::formats::gguf::Gguf;
use crate::formats::gguf_header::{Header, Value};
use crate::formats::hf_config::HfConfig;
use crate::formats::tokenizer::Tokenizer;
use crate::models::{self, ConfigSource};

/// The file format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Format {
    /// `GGUF` or `safetensors`.
    pub name: &'static str,
    /// GGUF version (null for safetensors).
    pub version: Option<u32>,
    /// Number of files (shards).
    pub files: usize,
    /// Bytes of all files together.
    pub file_size: u64,
    /// Where the tensor data starts (GGUF only).
    pub data_offset: Option<u64>,
    /// Data alignment (GGUF only).
    pub alignment: Option<u64>,
}

/// Whether this build can run the model, and why not.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Support {
    /// True when every check passes (architecture, tensor types, tokenizer, template).
    pub runnable: bool,
    /// The family that serves the architecture, if any.
    pub family: Option<&'static str>,
    /// What stands in the way, one sentence each.
    pub reasons: Vec<String>,
}

/// Tensors of one storage type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeShare {
    /// Storage type.
    pub dtype: String,
    /// Whether this build computes with it.
    pub supported: bool,
    /// Number of tensors.
    pub tensors: usize,
    /// Their elements.
    pub elements: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Model dimensions (null where the file does not say).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dims {
    /// Trained context length.
    pub context_length: Option<u64>,
    /// Blocks.
    pub layers: Option<u64>,
    /// Query heads.
    pub heads: Option<u64>,
    /// Key/value heads.
    pub kv_heads: Option<u64>,
    /// Width of one key head.
    pub head_dim: Option<u64>,
    /// Width of one value head.
    pub value_head_dim: Option<u64>,
    /// Model width.
    pub hidden: Option<u64>,
    /// MLP width.
    pub ffn: Option<u64>,
    /// Experts per MoE layer.
    pub experts: Option<u64>,
    /// Experts used per token.
    pub experts_used: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// Sliding attention window.
    pub sliding_window: Option<u64>,
}

/// Rotary position embedding settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rope {
    /// Frequency base (theta).
    pub freq_base: Option<f64>,
    /// Frequency base of sliding-window layers, where it differs.
    pub freq_base_swa: Option<f64>,
    /// Rotated dimensions per head.
    pub dimension_count: Option<u64>,
    /// Scaling type (`linear`, `yarn`, `llama3`, ...).
    pub scaling_type: Option<String>,
    /// Scaling factor.
    pub scaling_factor: Option<f64>,
    /// Context length before scaling.
    pub original_context_length: Option<u64>,
}

/// A special token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Special {
    /// `bos`, `eos`, `eot`, `unknown`, `padding`, ...
    pub role: String,
    /// Its id (null when the text is not in the vocabulary).
    pub id: Option<u64>,
    /// Its text.
    pub text: Option<String>,
}

/// The tokenizer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TokenizerInfo {
    /// GGUF `tokenizer.ggml.model` (`gpt2`, `llama`) or `tokenizer.json` `model.type`.
    pub model: Option<String>,
    /// GGUF `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// Number of tokens.
    pub vocab_size: Option<u64>,
    /// Whether BOS is prepended (GGUF, as this build's tokenizer decides).
    pub adds_bos: Option<bool>,
    /// Special tokens named by the metadata.
    pub special: Vec<Special>,
    /// The end-of-generation set this build stops on (GGUF).
    pub end_of_generation: Vec<Special>,
}

/// The chat template.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TemplateInfo {
    /// Whether the model has one.
    pub present: bool,
    /// Where it comes from (`tokenizer.chat_template`, `tokenizer_config.json`, ...).
    pub source: Option<String>,
    /// Its length in characters.
    pub chars: Option<usize>,
}

/// The summary view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// File or directory name.
    pub file: String,
    /// The format.
    pub format: Format,
    /// `general.name` or `config.json` `_name_or_path`.
    pub name: Option<String>,
    /// GGUF `general.architecture` or `config.json` `architectures[0]`.
    pub architecture: Option<String>,
    /// Whether this build runs it.
    pub support: Support,
    /// Parameters: the elements of every tensor.
    pub parameters: u64,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Tensors by storage type, most bytes first.
    pub quant_mix: Vec<TypeShare>,
    /// Dimensions.
    pub dims: Dims,
    /// RoPE.
    pub rope: Rope,
    /// Tokenizer.
    pub tokenizer: TokenizerInfo,
    /// Chat template.
    pub chat_template: TemplateInfo,
    /// Tensor and index problems (data past the end, shards disagreeing with the index).
    pub problems: Vec<String>,
    /// Memory estimate.
    pub memory: Memory,
}

/// What the format-specific readers find.
struct Facts {
    name: Option<String>,
    architecture: Option<String>,
    dims: Dims,
    rope: Rope,
    tokenizer: TokenizerInfo,
    chat_template: TemplateInfo,
    support: Support,
}

/// Builds the summary, with the memory estimate at `ctx` (`None`: as `run` would choose).
pub fn summarize(model: &Model, ctx: Option<u64>, machine: Machine) -> Summary {
    let rows = tensors::list(model);
    let mut problems: Vec<String> = rows.iter().filter_map(|t| t.problem.clone()).collect();
    let (format, mut facts) = match model {
        Model::Gguf { header, path } => (
            Format {
                name: "GGUF",
                version: Some(header.version),
                files: 1,
                file_size: header.file_size,
                data_offset: Some(header.data_offset),
                alignment: Some(header.alignment),
            },
            gguf_facts(header, path),
        ),
        Model::Safetensors {
            checkpoint,
            dir,
            path,
        } => {
            problems.extend(checkpoint.problems.iter().cloned());
            let config = dir.as_deref().and_then(hf::config);
            let mut facts = hf_facts(config.as_ref(), dir.as_deref());
            // `run` takes a checkpoint directory (or a weights file inside one), not an
            // index file; without config.json the facts already say so.
            if config.is_some() {
                if let Err(e) = detect::detect(path) {
                    facts.support.reasons.push(e.to_string());
                }
            }
            (
                Format {
                    name: "safetensors",
                    version: None,
                    files: checkpoint.shards.len(),
                    file_size: checkpoint.file_size(),
                    data_offset: None,
                    alignment: None,
                },
                facts,
            )
        }
    };
    let support = &mut facts.support;
    support.reasons.extend(unsupported_types(&rows));
    if let Some(first) = problems.first() {
        support.reasons.push(match problems.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more problems)", n - 1),
        });
    }
    let mut cache = None;
    if support.reasons.is_empty() {
        // The configuration passes: load it as `run` would (without reading tensor data), so
        // a missing, misshapen or left-over tensor is a reason here too; the model built
        // describes its cache layer by layer.
        match weights_check(model) {
            Ok(Some(m)) => {
                let widths = m.kv_elements_per_position();
                cache = Some(
                    m.cache_layout()
                        .iter()
                        .zip(widths.iter().copied().chain(std::iter::repeat(0)))
                        .map(|(kind, width)| memory::layer_cache(kind, width))
                        .collect::<Vec<_>>(),
                );
            }
            Ok(None) => {}
            Err(e) => support.reasons.push(e.to_string()),
        }
    }
    support.runnable = support.reasons.is_empty();
    let dims = &facts.dims;
    // Without a model to describe its cache: full KV in every layer, from the dimensions.
    let cache = cache.or_else(|| {
        let shape = dims.layers.zip(dims.kv_heads).zip(dims.head_dim).map(
            |((layers, kv_heads), key_dim)| KvShape {
                layers,
                kv_heads,
                key_dim,
                value_dim: dims.value_head_dim.unwrap_or(key_dim),
            },
        );
        shape.map(|s| s.layers())
    });
    let weights = saturating_sum(rows.iter().filter_map(|t| t.bytes));
    let ctx = memory::ctx_size(ctx, dims.context_length);
    Summary {
        file: model.display_name(),
        format,
        name: facts.name,
        architecture: facts.architecture,
        support: facts.support,
        parameters: saturating_sum(rows.iter().filter_map(|t| t.elements)),
        tensor_count: rows.len(),
        quant_mix: quant_mix(&rows),
        dims: facts.dims,
        rope: facts.rope,
        tokenizer: facts.tokenizer,
        chat_template: facts.chat_template,
        problems,
        memory: memory::estimate(weights, cache.as_deref(), ctx, machine),
    }
}

/// A sum that stops at `u64::MAX` (sizes come from untrusted headers).
pub fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

fn quant_mix(rows: &[Tensor]) -> Vec<TypeShare> {
    let mut mix: Vec<TypeShare> = Vec::new();
    for t in rows {
        let i = match mix.iter().position(|s| s.dtype == t.dtype) {
            Some(i) => i,
            None => {
                mix.push(TypeShare {
                    dtype: t.dtype.clone(),
                    supported: t.supported,
                    tensors: 0,
                    elements: 0,
                    bytes: 0,
                });
                mix.len() - 1
            }
        };
        let s = &mut mix[i];
        s.tensors += 1;
        s.elements = s.elements.saturating_add(t.elements.unwrap_or(0));
        s.bytes = s.bytes.saturating_add(t.bytes.unwrap_or(0));
    }
    mix.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.dtype.cmp(&b.dtype)));
    mix
}

/// One sentence per storage type this build cannot compute with.
fn unsupported_types(rows: &[Tensor]) -> Vec<String> {
    let mut out: Vec<(&str, usize, &str)> = Vec::new();
    for t in rows.iter().filter(|t| !t.supported) {
        match out.iter_mut().find(|(d, _, _)| *d == t.dtype) {
            Some(entry) => entry.1 += 1,
            None => out.push((&t.dtype, 1, &t.name)),
        }
    }
    out.into_iter()
        .map(|(dtype, n, first)| {
            format!(
                "{dtype}: not supported by this build ({n} tensor{}, e.g. {first})",
                if n == 1 { "" } else { "s" }
            )
        })
        .collect()
}

/// Facts of a GGUF file from its metadata; `path` is opened as `run` opens it to read the
/// family's configuration.
fn gguf_facts(h: &Header, path: &std::path::Path) -> Facts {
    let arch = h.architecture().map(str::to_string);
    let a = arch.clone().unwrap_or_default();
    let key = |k: &str| h.get(&format!("{a}.{k}"));
    let uint = |k: &str| key(k).and_then(Value::as_u64);
    let float = |k: &str| key(k).and_then(Value::as_f64);
    let tokens = h.get("tokenizer.ggml.tokens").and_then(Value::as_array);
    let hidden = uint("embedding_length");
    let heads = uint("attention.head_count");
    let head_dim = uint("attention.key_length")
        .or_else(|| hidden.zip(heads).and_then(|(d, n)| d.checked_div(n)));
    let dims = Dims {
        context_length: uint("context_length"),
        layers: uint("block_count"),
        heads,
        // Hybrids (LFM2) give one count per layer, 0 where a layer has no attention.
        kv_heads: uint("attention.head_count_kv")
            .or_else(|| {
                let per_layer = key("attention.head_count_kv").and_then(Value::as_array)?;
                per_layer.items.iter().filter_map(Value::as_u64).max()
            })
            .or(heads),
        head_dim,
        value_head_dim: uint("attention.value_length").or(head_dim),
        hidden,
        // Per-layer widths (Gemma 4's double-wide MLPs): the widest.
        ffn: uint("feed_forward_length").or_else(|| {
            let per_layer = key("feed_forward_length").and_then(Value::as_array)?;
            per_layer.items.iter().filter_map(Value::as_u64).max()
        }),
        experts: uint("expert_count"),
        experts_used: uint("expert_used_count"),
        vocab_size: uint("vocab_size").or(tokens.map(|t| t.len)),
        sliding_window: uint("attention.sliding_window"),
    };
    let rope = Rope {
        freq_base: float("rope.freq_base"),
        freq_base_swa: float("rope.freq_base_swa"),
        dimension_count: uint("rope.dimension_count").or(head_dim),
        scaling_type: key("rope.scaling.type")
            .and_then(Value::as_str)
            .map(str::to_string),
        scaling_factor: float("rope.scaling.factor"),
        original_context_length: uint("rope.scaling.original_context_length"),
    };
    let mut reasons = Vec::new();
    let family = match &arch {
        None => {
            reasons.push("no general.architecture key".to_string());
            None
        }
        Some(a) => match models::family_for_gguf_metadata(a, uint) {
            Ok(f) => {
                let checked = Gguf::open(path).and_then(|g| (f.check)(&ConfigSource::Gguf(&g)));
                if let Err(e) = checked {
                    reasons.push(e.to_string());
                }
                Some(f.id)
            }
            Err(e) => {
                reasons.push(e.to_string());
                None
            }
        },
    };
    let piece = |id: u64| {
        tokens
            .and_then(|t| t.items.get(usize::try_from(id).ok()?))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let special = [
        ("bos", "bos"),
        ("eos", "eos"),
        ("eot", "eot"),
        ("eom", "eom"),
        ("unknown", "unknown"),
        ("padding", "padding"),
        ("sep", "seperator"),
        ("mask", "mask"),
        ("cls", "cls"),
    ]
    .iter()
    .filter_map(|(role, k)| {
        let id = h.get(&format!("tokenizer.ggml.{k}_token_id"))?.as_u64()?;
        Some(Special {
            role: role.to_string(),
            id: Some(id),
            text: piece(id),
        })
    })
    .collect();
    let mut tokenizer = TokenizerInfo {
        model: h
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .map(str::to_string),
        pre: h
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .map(str::to_string),
        vocab_size: tokens.map(|t| t.len),
        special,
        ..TokenizerInfo::default()
    };
    match Tokenizer::from_gguf(&h.to_candle_content()) {
        Ok(t) => {
            tokenizer.adds_bos = Some(t.adds_bos());
            tokenizer.end_of_generation = t
                .end_of_generation_ids()
                .iter()
                .map(|&id| Special {
                    role: "eog".into(),
                    id: Some(id.into()),
                    text: t.piece(id).map(str::to_string),
                })
                .collect();
        }
        Err(e) => reasons.push(format!("tokenizer: {e}")),
    }
    let template = h.get("tokenizer.chat_template").and_then(Value::as_str);
    if let Some(Err(e)) = template.map(|t| ChatTemplate::with_origin(t, Origin::Model)) {
        reasons.push(e.to_string());
    }
    Facts {
        name: h
            .get("general.name")
            .and_then(Value::as_str)
            .map(str::to_string),
        architecture: arch,
        dims,
        rope,
        tokenizer,
        chat_template: TemplateInfo {
            present: template.is_some(),
            source: template.map(|_| "tokenizer.chat_template".into()),
            chars: template.map(|t| t.chars().count()),
        },
        support: Support {
            runnable: reasons.is_empty() && family.is_some(),
            family,
            reasons,
        },
    }
}

/// A load of `model`'s weights that reads no tensor data ([`models::check_gguf`],
/// [`models::check_safetensors`]).
fn weights_check(model: &Model) -> crate::Result<Option<Box<dyn models::CausalLm>>> {
    match model {
        Model::Gguf { path, .. } => models::check_gguf(&Gguf::open(path)?).map(Some),
        Model::Safetensors {
            checkpoint, dir, ..
        } => {
            let Some(dir) = dir else { return Ok(None) };
            let config = HfConfig::from_file(&dir.join("config.json"))?;
            let files: Vec<_> = checkpoint.shards.iter().map(|s| s.path.clone()).collect();
            models::check_safetensors(&config, &files).map(Some)
        }
    }
}

/// The family of a `config.json` as `run` finds it (a multimodal checkpoint's by its text
/// model), with the reason to `reasons` when its configuration would not load.
fn hf_family(h: &HfConfig, reasons: &mut Vec<String>) -> Option<&'static str> {
    match models::hf_model(h) {
        Ok(m) => {
            if let Err(e) = (m.spec.check)(&ConfigSource::Hf(&m.config)) {
                reasons.push(e.to_string());
            }
            Some(m.spec.id)
        }
        Err(e) => {
            reasons.push(e.to_string());
            None
        }
    }
}

/// Facts of a safetensors checkpoint from the Hugging Face files in `dir`.
fn hf_facts(config: Option<&Json>, dir: Option<&std::path::Path>) -> Facts {
    let null = Json::Null;
    let c = config.unwrap_or(&null);
    let uint = |k: &str| hf::uint(c, k);
    let arch = hf::architecture(c);
    let hidden = uint("hidden_size");
    let heads = uint("num_attention_heads");
    let head_dim =
        uint("head_dim").or_else(|| hidden.zip(heads).and_then(|(d, n)| d.checked_div(n)));
    let dims = Dims {
        context_length: uint("max_position_embeddings"),
        layers: uint("num_hidden_layers"),
        heads,
        kv_heads: uint("num_key_value_heads").or(heads),
        head_dim,
        value_head_dim: head_dim,
        hidden,
        ffn: uint("intermediate_size"),
        experts: uint("num_local_experts")
            .or_else(|| uint("num_experts"))
            .or_else(|| uint("n_routed_experts")),
        experts_used: uint("num_experts_per_tok"),
        vocab_size: uint("vocab_size"),
        sliding_window: uint("sliding_window"),
    };
    let scaling = hf::lookup(c, "rope_scaling");
    let scaling_str = |k: &str| scaling?.get(k)?.as_str().map(str::to_string);
    let rope = Rope {
        freq_base: hf::float(c, "rope_theta"),
        freq_base_swa: hf::float(c, "rope_local_base_freq"),
        dimension_count: hf::float(c, "partial_rotary_factor")
            .zip(head_dim)
            .map(|(f, d)| (f * d as f64) as u64)
            .or(head_dim),
        scaling_type: scaling_str("rope_type").or_else(|| scaling_str("type")),
        scaling_factor: scaling.and_then(|s| s.get("factor")?.as_f64()),
        original_context_length: scaling
            .and_then(|s| s.get("original_max_position_embeddings")?.as_u64()),
    };
    let mut reasons = Vec::new();
    if dir.is_some_and(|d| !d.join("tokenizer.json").is_file()) {
        reasons.push("no tokenizer.json beside the weights".to_string());
    }
    if config.is_none() {
        reasons.push("no readable config.json beside the weights".to_string());
    }
    let family = match c.as_object() {
        Some(map) => {
            // Named as `run` names it, so both print the same line.
            let origin = dir.map_or_else(
                || "config.json".to_string(),
                |d| d.join("config.json").display().to_string(),
            );
            hf_family(&HfConfig::from_map(map.clone(), &origin), &mut reasons)
        }
        None => None,
    };
    let facts = dir.map(hf::tokenizer).unwrap_or_default();
    if let Some(e) = &facts.error {
        reasons.push(format!("tokenizer: {e}"));
    }
    let tokenizer = TokenizerInfo {
        model: facts.model,
        pre: None,
        vocab_size: facts.vocab_size,
        adds_bos: None,
        special: facts
            .special
            .into_iter()
            .map(|(role, id, text)| Special {
                role,
                id,
                text: Some(text),
            })
            .collect(),
        end_of_generation: Vec::new(),
    };
    let template = dir.and_then(hf::chat_template);
    Facts {
        name: c
            .get("_name_or_path")
            .and_then(Json::as_str)
            .map(str::to_string),
        architecture: arch,
        dims,
        rope,
        tokenizer,
        chat_template: TemplateInfo {
            present: template.is_some(),
            chars: template.as_ref().map(|t| t.1.chars().count()),
            source: template.map(|t| t.0),
        },
        support: Support {
            runnable: reasons.is_empty() && family.is_some(),
            family,
            reasons,
        },
    }
}
