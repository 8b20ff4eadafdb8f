//! Model families: the [`CausalLm`] trait every family implements, the family registry
//! ([`FAMILIES`]), model-level layers ([`layers`]), shared model assembly ([`assembly`]), and
//! one file per family. How the numbers are computed lives in [`crate::kernels`]; the cache a
//! forward pass writes to is the engine's ([`crate::engine::cache`]).
//!
//! Adding a family is one file here, one entry in [`FAMILIES`], and its tests.
//!
//! GGUF files are matched to a family by `general.architecture`, each architecture string
//! registered by exactly one family. Where a converter reuses another family's architecture
//! string (llama.cpp writes Mixtral as `llama` with `llama.expert_count` > 0), the family that
//! really serves such files declares a [`GgufVariant`] in its own spec: the architecture plus
//! the metadata key that tells the files apart. [`family_for_gguf_file`] consults variants
//! before the plain table, so the owner of the architecture (llama) needs no change and the
//! variant stays in the one file of the family that needs it.

pub mod assembly;
pub mod deepseek_v3;
pub mod gemma3;
pub mod gemma4;
pub mod glm4_moe;
pub mod gpt_oss;
pub mod granite;
pub mod hf_class;
pub mod layers;
pub mod lfm2;
pub mod llama;
pub mod mixtral;
pub mod olmo3;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_5;
pub mod qwen3_5_moe;
pub mod qwen3_moe;
pub mod qwen3_next;
pub mod recipe;
pub mod rope_config;
pub mod smollm3;
pub mod synthetic;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod values;

use candle_core::{Device, Tensor};

pub use crate::engine::cache::{Cache, LayerKind};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::names::NamePair;
use crate::formats::weights::{Vb, WeightFormat, Weights};
use crate::{Error, Result};
pub use recipe::Recipe;

/// Dense or mixture-of-experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every token goes through every weight.
    Dense,
    /// Tokens are routed to a few experts per layer.
    Moe,
}

/// What a loaded model is, in numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The family id (== module name).
    pub family: &'static str,
    /// Dense or MoE.
    pub kind: Kind,
    /// Number of blocks.
    pub n_layers: usize,
    /// Model (embedding) width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of the output layer.
    pub vocab_size: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
}

/// Receives intermediate values of a forward pass (for `inspect --layer-trace`).
pub trait Tracer {
    /// Called with a block's output (`point` names the place, e.g. `block_out`).
    fn record(&mut self, layer: usize, point: &str, value: &Tensor);
}

/// Per-call state of a forward pass: the engine's cache and an optional tracer.
pub struct Forward<'a> {
    /// The cache; its position is where the new tokens go (see [`step`]).
    pub cache: &'a mut Cache,
    /// Receives traced values when set.
    pub tracer: Option<&'a mut dyn Tracer>,
}

impl<'a> Forward<'a> {
    /// A forward pass without tracing.
    pub fn new(cache: &'a mut Cache) -> Self {
        Self {
            cache,
            tracer: None,
        }
    }

    /// Reports `value` to the tracer, if any. Free when tracing is off.
    pub fn trace(&mut self, layer: usize, point: &str, value: &Tensor) {
        if let Some(t) = self.tracer.as_deref_mut() {
            t.record(layer, point, value);
        }
    }
}

/// A causal language model.
pub trait CausalLm: Send {
    /// Feeds `tokens` (`[1, n]`, u32) at the cache's position and returns the last token's
    /// logits (`[vocab]`, f32). The cache grows by `n`.
    fn forward(&self, tokens: &Tensor, ctx: &mut Forward) -> Result<Tensor>;
    /// Dimensions and identity.
    fn info(&self) -> &ModelInfo;
    /// What each layer keeps in the cache between passes (full KV unless a family says
    /// otherwise: sliding windows, shared KV, recurrent state).
    fn cache_layout(&self) -> Vec<LayerKind> {
        vec![LayerKind::Full; self.info().n_layers]
    }
    /// Elements one position takes in each layer's KV cache, keys and values together (read
    /// only for layers whose [`CausalLm::cache_layout`] entry holds KV): what `inspect`'s
    /// memory estimate multiplies by the context. Families whose layers differ in KV heads
    /// or head width, or cache something else per position, override it.
    fn kv_elements_per_position(&self) -> Vec<usize> {
        let i = self.info();
        vec![2 * i.n_kv_heads * i.head_dim; i.n_layers]
    }
    /// Feeds one token to each of several sequences (`tokens[i]` at the position of
    /// `caches[i]`, whose pass has begun) and returns their logits (`[B, vocab]`, f32).
    /// Families whose layers take a batch override this so that the weights are read once
    /// for all the sequences; the default runs them one after another.
    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut Cache],
        device: &Device,
    ) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(tokens.len());
        for (&token, cache) in tokens.iter().zip(caches.iter_mut()) {
            let input = Tensor::new(&[token], device)?.unsqueeze(0)?;
            rows.push(self.forward(&input, &mut Forward::new(cache))?);
        }
        Ok(Tensor::stack(&rows, 0)?)
    }
    /// The model as a [`Recipe`], for backends that run the whole decoder themselves (the
    /// fused CUDA decoder), or why it cannot be described so.
    fn recipe(&self) -> std::result::Result<Recipe, recipe::Unsupported> {
        Err(format!(
            "the {} family has no decoder recipe",
            self.info().family
        ))
    }
}

/// One forward pass of `tokens` at the cache's position: begins the pass, runs the model,
/// and commits the tokens to the cache (or abandons the pass when the model fails). Returns
/// the last token's logits.
pub fn step(
    model: &dyn CausalLm,
    tokens: &[u32],
    device: &Device,
    cache: &mut Cache,
    tracer: Option<&mut dyn Tracer>,
) -> Result<Tensor> {
    cache.begin(tokens.len())?;
    let run = match Tensor::new(tokens, device).and_then(|t| t.unsqueeze(0)) {
        Ok(input) => {
            let tracer = tracer.map(|t| &mut *t as &mut dyn Tracer);
            let cache = &mut *cache;
            model.forward(&input, &mut Forward { cache, tracer })
        }
        Err(e) => Err(e.into()),
    };
    match run {
        Ok(logits) => {
            cache.commit(tokens)?;
            Ok(logits)
        }
        Err(e) => {
            cache.abort();
            Err(e)
        }
    }
}

/// One forward pass of one token for each of several sequences (`tokens[i]` after what
/// `caches[i]` holds): begins every pass, runs the model on the batch, and commits each token
/// (or abandons every pass when the model fails). Returns the logits, `[B, vocab]`.
pub fn step_batch(
    model: &dyn CausalLm,
    tokens: &[u32],
    device: &Device,
    caches: &mut [&mut Cache],
) -> Result<Tensor> {
    if tokens.len() != caches.len() {
        return Err(Error::Internal(format!(
            "a batch of {} tokens for {} sequences",
            tokens.len(),
            caches.len()
        )));
    }
    for i in 0..caches.len() {
        if let Err(e) = caches[i].begin(1) {
            caches[..i].iter_mut().for_each(|c| c.abort());
            return Err(e);
        }
    }
    match model.forward_batch(tokens, caches, device) {
        Ok(logits) => {
            for (cache, &token) in caches.iter_mut().zip(tokens) {
                cache.commit(&[token])?;
            }
            Ok(logits)
        }
        Err(e) => {
            caches.iter_mut().for_each(|c| c.abort());
            Err(e)
        }
    }
}

/// A fresh cache for `model`'s layout, holding `ctx` positions.
pub fn new_cache(model: &dyn CausalLm, ctx: usize) -> Result<Cache> {
    Cache::new(&model.cache_layout(), ctx, model.info().context_length)
}

/// Where a family reads its configuration from.
pub enum ConfigSource<'a> {
    /// GGUF metadata.
    Gguf(&'a Gguf),
    /// A Hugging Face `config.json`.
    Hf(&'a HfConfig),
}

/// Facts about a family's files that differ by format, declared instead of discovered.
/// A family names only the quirks it has: `Quirks { norm_unit_offset: true, ..Quirks::NONE }`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// llama.cpp's converter permutes Q/K rows so that GGUF weights use interleaved RoPE.
    pub gguf_qk_permuted: bool,
    /// RMSNorm multiplies by `1 + w` (Gemma) in the reference implementation.
    pub norm_unit_offset: bool,
    /// llama.cpp's converter folds that `1 + w` into the stored norm weights.
    pub gguf_norm_unit_offset_folded: bool,
    /// llama.cpp's Gated DeltaNet conversion (Qwen3.5, Qwen3-Next): `ssm_a` holds
    /// `-exp(A_log)`, the convolution is stored without its middle axis, the DeltaNet's
    /// gated output norm is not unit-offset (nor folded), value heads are tiled over key
    /// heads (Qwen3.5; export refuses fewer key heads than value heads), and
    /// `partial_rotary_factor` is `rope.dimension_count` over the head width.
    pub gguf_delta_net: bool,
    /// The family's own reading of its GGUF into transformers' `config.json` for export, for
    /// what llama.cpp's converter writes in a form no plain key maps back: Gemma 4's blocks
    /// by layer type (`layer_types`, `per_layer_config`, `rope_parameters`, ...), DeepSeek's
    /// router as the transformers class that computes it. Called after the plain keys.
    pub gguf_hf_config: Option<GgufHfConfig>,
    /// `config.json` booleans llama.cpp's converter writes no key for, which export sets from
    /// the GGUF: `(HF key, GGUF tensor)`, the key true when the file holds the tensor (GLM-4.x
    /// MoE's `attention_bias` and `use_qk_norm`).
    pub gguf_tensor_flags: &'static [(&'static str, &'static str)],
}

/// [`Quirks::gguf_hf_config`]: the GGUF, its architecture, the `config.json` being written.
pub type GgufHfConfig =
    fn(&Gguf, &str, &mut serde_json::Map<String, serde_json::Value>) -> Result<()>;

impl Quirks {
    /// No quirks: the files hold what the reference implementation computes with.
    pub const NONE: Self = Self {
        gguf_qk_permuted: false,
        norm_unit_offset: false,
        gguf_norm_unit_offset_folded: false,
        gguf_delta_net: false,
        gguf_tensor_flags: &[],
        gguf_hf_config: None,
    };
}

/// A tiny configuration for conformance tests on random weights.
#[derive(Clone, Copy, Debug)]
pub struct TinyConfig {
    /// GGUF suffixes of the tensors of each block (`attn_q.weight`, ...).
    pub block_tensors: &'static [&'static str],
    /// Family-specific metadata (key without the architecture prefix, value). Expert
    /// tensors take their shapes from `expert_count` and `expert_feed_forward_length` (or the
    /// dense `feed_forward_length` when absent, as in llama.cpp's Mixtral files). Keys under
    /// [`synthetic::HINT_PREFIX`] only shape the tensors and are not written.
    pub metadata: &'static [(&'static str, u32)],
    /// `ffn_up.weight` holds the gate and up projections stacked (`2 × ffn` rows, Phi-3).
    pub fused_gate_up: bool,
}

/// A GGUF architecture string registered by another family, served by this one when the
/// integer `{architecture}.{nonzero_key}` is present and non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgufVariant {
    /// The `general.architecture` value (owned by another family).
    pub architecture: &'static str,
    /// The metadata key (without the architecture prefix) that marks this family's files.
    pub nonzero_key: &'static str,
}

/// One registered family.
pub struct FamilySpec {
    /// Family id, equal to its module name.
    pub id: &'static str,
    /// Dense or MoE.
    pub kind: Kind,
    /// `architectures` values of Hugging Face `config.json` this family serves.
    pub hf_architectures: &'static [&'static str],
    /// `general.architecture` values of GGUF files this family serves.
    pub gguf_architectures: &'static [&'static str],
    /// Files of another family's architecture that this family serves (see [`GgufVariant`]).
    pub gguf_variants: &'static [GgufVariant],
    /// Name rows that add to or override [`crate::formats::names::COMMON`].
    pub gguf_names: &'static [NamePair],
    /// Declared format quirks.
    pub quirks: Quirks,
    /// The shipped chat template (`assets/templates/NAME.jinja`) used when a checkpoint has
    /// none.
    pub default_template: &'static str,
    /// `model_type` written to an exported `config.json`.
    pub hf_model_type: &'static str,
    /// `config.json` keys of this family beyond [`crate::formats::names::CONFIG_KEYS`], as
    /// (HF key, GGUF key without the architecture prefix), for export.
    pub hf_config_keys: &'static [NamePair],
    /// `config.json` values an export writes when the GGUF has no key for them, as (HF key,
    /// JSON literal): the GGUF reader's defaults where they differ from transformers'.
    pub hf_config_defaults: &'static [(&'static str, &'static str)],
    /// Builds the model.
    pub load: fn(&Vb, &ConfigSource) -> Result<Box<dyn CausalLm>>,
    /// Reads and validates the configuration exactly as `load` does, without the weights:
    /// what `inspect` asks before it says a model runs.
    pub check: fn(&ConfigSource) -> Result<()>,
    /// Shapes for conformance tests.
    pub tiny: TinyConfig,
}

impl FamilySpec {
    /// The `general.architecture` this family's GGUF files carry: its own first architecture,
    /// else the one of its first variant (for writing synthetic files).
    pub fn gguf_architecture(&self) -> Option<&'static str> {
        self.gguf_architectures
            .first()
            .or(self.gguf_variants.first().map(|v| &v.architecture))
            .copied()
    }
}

/// Every family this build supports.
pub static FAMILIES: &[&FamilySpec] = &[
    &llama::SPEC,
    &qwen2::SPEC,
    &qwen3::SPEC,
    &gemma3::SPEC,
    &qwen3_moe::SPEC,
    &mixtral::SPEC,
    &phi3::SPEC,
    &granite::SPEC,
    &smollm3::SPEC,
    &olmo3::SPEC,
    &lfm2::SPEC,
    &qwen3_5::SPEC,
    &qwen3_5_moe::SPEC,
    &qwen3_next::SPEC,
    &gemma4::SPEC,
    &gpt_oss::SPEC,
    &deepseek_v3::SPEC,
    &glm4_moe::SPEC,
];

/// The registered family with id `id`.
pub fn family(id: &str) -> Option<&'static FamilySpec> {
    FAMILIES.iter().copied().find(|f| f.id == id)
}

/// The Hugging Face architectures of all families, for error messages and help text.
pub fn supported_hf_architectures() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.hf_architectures.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family that serves a Hugging Face `architectures` entry.
pub fn family_for_hf(arch: &str) -> Result<&'static FamilySpec> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.hf_architectures.contains(&arch))
        .ok_or_else(|| Error::UnsupportedArchitecture {
            found: arch.to_string(),
            supported: supported_hf_architectures(),
        })
}

/// What a `config.json` describes: the family and the config of the model mlcli runs.
pub struct HfModel {
    /// The family.
    pub spec: &'static FamilySpec,
    /// The language model's config: the file's, or the `text_config` inside it.
    pub config: HfConfig,
    /// Set for a multimodal checkpoint: the architecture whose text model is loaded.
    pub multimodal: Option<String>,
}

/// The family of a `config.json`: by its architecture, or, for a multimodal checkpoint
/// (`…ForConditionalGeneration` with a `text_config`), by its text model's `model_type`.
pub fn hf_model(config: &HfConfig) -> Result<HfModel> {
    let arch = config.architecture()?;
    let unsupported = |found: String| Error::UnsupportedArchitecture {
        found,
        supported: supported_hf_architectures(),
    };
    if let Ok(spec) = family_for_hf(arch) {
        return Ok(HfModel {
            spec,
            config: config.clone(),
            multimodal: None,
        });
    }
    let Some(text) = config.sub("text_config") else {
        return Err(unsupported(arch.to_string()));
    };
    let model_type = text.opt_str("model_type")?.unwrap_or_default().to_string();
    let spec = FAMILIES
        .iter()
        .copied()
        .find(|f| f.hf_model_type == model_type)
        .ok_or_else(|| unsupported(format!("{arch} (text model '{model_type}')")))?;
    Ok(HfModel {
        spec,
        config: text,
        multimodal: Some(arch.to_string()),
    })
}

/// Loads a model from safetensors files (`config` is their `config.json`), checking that
/// every tensor was used (of a multimodal checkpoint: every tensor of its text model).
pub fn load_safetensors(
    config: &HfConfig,
    files: &[std::path::PathBuf],
    precision: crate::formats::weights::Precision,
    device: &Device,
) -> Result<Box<dyn CausalLm>> {
    safetensors_model(config, Weights::from_safetensors(files, precision, device)?)
}

/// Checks that a safetensors checkpoint loads as [`load_safetensors`] would load it on the
/// CPU (every tensor present with its shape and a supported type, none left over) without
/// reading tensor data: `inspect`'s verdict. The model it builds has no weights to run, but
/// describes its cache ([`CausalLm::cache_layout`]) for the memory estimate.
pub fn check_safetensors(
    config: &HfConfig,
    files: &[std::path::PathBuf],
) -> Result<Box<dyn CausalLm>> {
    let weights = Weights::from_safetensors(files, Default::default(), &Device::Cpu)?;
    safetensors_model(config, weights.check_only())
}

fn safetensors_model(config: &HfConfig, weights: Weights) -> Result<Box<dyn CausalLm>> {
    let m = hf_model(config)?;
    let mut weights = weights.with_fp8(crate::formats::fp8::Scheme::from_config(config)?);
    if m.multimodal.is_some() {
        weights.select_text_model()?;
    }
    let model = (m.spec.load)(&weights.pp(""), &ConfigSource::Hf(&m.config))?;
    weights.check_all_used(m.spec.id)?;
    Ok(model)
}

/// The GGUF architectures of all families, for error messages and help text.
pub fn supported_gguf_architectures() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.gguf_architectures.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family that serves a GGUF architecture.
pub fn family_for_gguf(arch: &str) -> Result<&'static FamilySpec> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.gguf_architectures.contains(&arch))
        .ok_or_else(|| Error::UnsupportedArchitecture {
            found: arch.to_string(),
            supported: supported_gguf_architectures(),
        })
}

/// The family that serves a GGUF file of architecture `arch` whose `{arch}.*` integers are
/// read by `uint` (`key` without the prefix): a family declaring a matching [`GgufVariant`],
/// else the owner of the architecture.
pub fn family_for_gguf_metadata(
    arch: &str,
    uint: impl Fn(&str) -> Option<u64>,
) -> Result<&'static FamilySpec> {
    let variant = FAMILIES.iter().copied().find(|f| {
        f.gguf_variants
            .iter()
            .any(|v| v.architecture == arch && uint(v.nonzero_key).is_some_and(|n| n > 0))
    });
    match variant {
        Some(f) => Ok(f),
        None => family_for_gguf(arch),
    }
}

/// The family that serves an open GGUF file (variants included).
pub fn family_for_gguf_file(gguf: &Gguf) -> Result<&'static FamilySpec> {
    let arch = gguf.architecture()?;
    family_for_gguf_metadata(arch, |k| {
        gguf.opt(&format!("{arch}.{k}"), Gguf::uint).ok().flatten()
    })
}

/// Loads a model from a GGUF file onto `device`, checking that every tensor was used.
pub fn load_gguf(gguf: &Gguf, device: &Device) -> Result<Box<dyn CausalLm>> {
    let spec = family_for_gguf_file(gguf)?;
    gguf_model(
        spec,
        gguf,
        Weights::from_gguf(gguf, spec.gguf_names, device),
    )
}

/// Checks that a GGUF loads as [`load_gguf`] would load it on the CPU (tensors borrowed from
/// the map, nothing stacked or read): `inspect`'s verdict, and a model that describes its
/// cache (not one to run).
pub fn check_gguf(gguf: &Gguf) -> Result<Box<dyn CausalLm>> {
    let spec = family_for_gguf_file(gguf)?;
    let weights = Weights::from_gguf(gguf, spec.gguf_names, &Device::Cpu).check_only();
    gguf_model(spec, gguf, weights)
}

fn gguf_model(
    spec: &'static FamilySpec,
    gguf: &Gguf,
    weights: Weights,
) -> Result<Box<dyn CausalLm>> {
    let model = (spec.load)(&weights.pp(""), &ConfigSource::Gguf(gguf))?;
    weights.check_all_used(spec.id)?;
    Ok(model)
}

/// The RoPE layout the weights expect, from the family's declared quirks.
pub fn rope_style(quirks: Quirks, format: WeightFormat) -> layers::rope::Style {
    match format {
        WeightFormat::Gguf if quirks.gguf_qk_permuted => layers::rope::Style::Interleaved,
        WeightFormat::Gguf => layers::rope::Style::HalfSplit,
        WeightFormat::Safetensors => layers::rope::Style::HalfSplit,
    }
}

/// Whether norm weights need Gemma's `1 + w`, from the family's declared quirks.
pub fn norm_unit_offset(quirks: Quirks, format: WeightFormat) -> bool {
    match format {
        WeightFormat::Gguf => quirks.norm_unit_offset && !quirks.gguf_norm_unit_offset_folded,
        WeightFormat::Safetensors => quirks.norm_unit_offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn family_ids_and_architectures_are_unique() {
        let (mut ids, mut archs) = (HashSet::new(), HashSet::new());
        for f in FAMILIES {
            assert!(ids.insert(f.id), "duplicate id {}", f.id);
            for a in f.gguf_architectures.iter().chain(f.hf_architectures) {
                assert!(archs.insert(a), "architecture {a} claimed twice");
            }
        }
    }

    #[test]
    fn every_default_template_is_shipped() {
        for f in FAMILIES {
            assert!(
                crate::formats::chat_template::builtin(f.default_template).is_some(),
                "{}: no shipped template '{}'",
                f.id,
                f.default_template
            );
        }
    }

    #[test]
    fn variants_refine_an_architecture_another_family_owns() {
        let mut seen = HashSet::new();
        for f in FAMILIES {
            assert!(
                f.gguf_architecture().is_some(),
                "{}: no GGUF architecture",
                f.id
            );
            for v in f.gguf_variants {
                let owner = family_for_gguf(v.architecture).unwrap();
                assert_ne!(owner.id, f.id, "{}: variant of its own architecture", f.id);
                assert!(
                    seen.insert(v.architecture),
                    "two variants of {}",
                    v.architecture
                );
            }
        }
    }

    #[test]
    fn a_llama_gguf_with_experts_is_served_by_mixtral() {
        let experts = |n: u64| move |k: &str| (k == "expert_count").then_some(n);
        assert_eq!(
            family_for_gguf_metadata("llama", experts(8)).unwrap().id,
            "mixtral"
        );
        assert_eq!(
            family_for_gguf_metadata("llama", experts(0)).unwrap().id,
            "llama"
        );
        assert_eq!(
            family_for_gguf_metadata("llama", |_| None).unwrap().id,
            "llama"
        );
        assert_eq!(
            family_for_gguf_metadata("qwen3", experts(8)).unwrap().id,
            "qwen3"
        );
    }

    #[test]
    fn unknown_architecture_lists_every_family() {
        let Err(Error::UnsupportedArchitecture { found, supported }) = family_for_gguf("rwkv7")
        else {
            panic!("rwkv7 should be unsupported")
        };
        assert_eq!(found, "rwkv7");
        for f in FAMILIES {
            for a in f.gguf_architectures {
                assert!(supported.contains(a));
            }
        }
    }
}
