//! Loading a Hugging Face checkpoint directory: `config.json`, the safetensors weights (one
//! file, or shards through `model.safetensors.index.json`), `tokenizer.json`,
//! `tokenizer_config.json` (chat template, special tokens, `add_bos_token`) and
//! `generation_config.json` (default sampling, extra end-of-generation ids).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::recommended::Recommended;
use crate::formats::hf_config::HfConfig;
use crate::formats::safetensors_index::Checkpoint;
use crate::formats::tokenizer::{HfSpecials, Tokenizer};
use crate::formats::weights::Precision;
use crate::models::{self, CausalLm};
use crate::{Error, Result};

/// Everything read from a checkpoint directory.
pub(crate) struct Loaded {
    pub(crate) model: Box<dyn CausalLm>,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) template: Option<String>,
    pub(crate) recommended: Recommended,
    pub(crate) name: String,
    /// Lines for the user about what was loaded (a multimodal checkpoint's text model).
    pub(crate) notes: Vec<String>,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Map<String, Json>>> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(HfConfig::from_file(path)?.map().clone()))
}

/// Loads the checkpoint in `dir`.
pub(crate) fn load(
    dir: &Path,
    precision: Precision,
    device: &candle_core::Device,
) -> Result<Loaded> {
    let config = HfConfig::from_file(&dir.join("config.json"))?;
    // Refuse unsupported architectures before the slower tokenizer and weight loading.
    let described = models::hf_model(&config)?;
    let spec = described.spec;
    let notes = described
        .multimodal
        .iter()
        .map(|arch| {
            format!(
                "{arch} is multimodal: its text model ({}) is loaded; the vision tower is not used",
                spec.id
            )
        })
        .collect();

    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.is_file() {
        return Err(Error::MissingConfigKey {
            key: "tokenizer.json".into(),
            origin: format!(
                "{} (the checkpoint has no tokenizer.json; mlcli needs the fast-tokenizer file)",
                dir.display()
            ),
        });
    }
    let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
    let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or_default();
    let gen = HfConfig::from_map(gen, "generation_config.json");
    let mut specials = HfSpecials::from_tokenizer_config(&tok_cfg);
    let ids = |key: &str| -> Result<Vec<u32>> {
        match config.ids(key)? {
            found if found.is_empty() => described.config.ids(key),
            found => Ok(found),
        }
    };
    specials.bos_id = ids("bos_token_id")?.first().copied();
    specials.eos_id = ids("eos_token_id")?.first().copied();
    specials.extra_eog = ids("eos_token_id")?;
    specials.extra_eog.extend(gen.ids("eos_token_id")?);
    let tokenizer = Tokenizer::from_hf(&tokenizer_json, &specials)?;

    let template = chat_template(dir, &tok_cfg)?;
    let recommended = super::recommended::from_generation_config(&gen)?;

    let checkpoint = Checkpoint::from_dir(dir)?;
    if let Some(problem) = checkpoint.problems.first() {
        return Err(Error::MalformedSafetensors {
            path: checkpoint
                .index
                .clone()
                .unwrap_or_else(|| dir.to_path_buf()),
            reason: problem.clone(),
        });
    }
    let files: Vec<PathBuf> = checkpoint.shards.iter().map(|s| s.path.clone()).collect();
    let model = models::load_safetensors(&config, &files, precision, device)?;
    // Shown in the chat and in `-v`: a directory name is not trusted to hold no escapes.
    let name = dir.file_name().map_or_else(
        || spec.id.to_string(),
        |n| crate::formats::untrusted::short(&n.to_string_lossy()),
    );
    Ok(Loaded {
        model,
        tokenizer,
        template,
        recommended,
        name,
        notes,
    })
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or a list of named
/// templates of which `default` is taken), else a `chat_template.jinja` file.
fn chat_template(dir: &Path, tok_cfg: &serde_json::Map<String, Json>) -> Result<Option<String>> {
    match tok_cfg.get("chat_template") {
        Some(Json::String(s)) => return Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let named = |want: &str| {
                list.iter().find_map(|t| {
                    (t.get("name").and_then(Json::as_str) == Some(want))
                        .then(|| t.get("template").and_then(Json::as_str))
                        .flatten()
                })
            };
            if let Some(t) = named("default") {
                return Ok(Some(t.to_string()));
            }
        }
        _ => {}
    }
    let file = dir.join("chat_template.jinja");
    if file.is_file() {
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|source| Error::Io { path: file, source });
    }
    Ok(None)
}
