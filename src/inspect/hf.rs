//! Facts from a Hugging Face model directory, for safetensors checkpoints: `config.json`
//! (dimensions, with `text_config` for multimodal wrappers), the tokenizer files
//! (`tokenizer.json`, `tokenizer_config.json`) and the chat template (`tokenizer_config.json`
//! or `chat_template.jinja`).

use std::path::Path;

use serde_json::Value as Json;

/// The largest JSON file read (a 262k-entry `tokenizer.json` is about 35 MB).
const MAX_JSON_LEN: u64 = 512 << 20;

/// Reads and parses a JSON file: `Ok(None)` when it does not exist, an error naming the file
/// when it cannot be read or parsed.
pub fn read_json(path: &Path) -> Result<Option<Json>, String> {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    if meta.len() > MAX_JSON_LEN {
        return Err(format!(
            "{name}: {} bytes is more than the {MAX_JSON_LEN} read",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{name} does not parse: {e}"))
}

/// `config.json` of `dir`, when present and valid.
pub fn config(dir: &Path) -> Option<Json> {
    read_json(&dir.join("config.json")).ok().flatten()
}

/// A config value, looked up at the top level and then in `text_config`.
pub fn lookup<'a>(config: &'a Json, key: &str) -> Option<&'a Json> {
    config
        .get(key)
        .filter(|v| !v.is_null())
        .or_else(|| config.get("text_config")?.get(key).filter(|v| !v.is_null()))
}

/// A non-negative integer config value.
pub fn uint(config: &Json, key: &str) -> Option<u64> {
    lookup(config, key)?.as_u64()
}

/// A numeric config value.
pub fn float(config: &Json, key: &str) -> Option<f64> {
    lookup(config, key)?.as_f64()
}

/// The first entry of `architectures`.
pub fn architecture(config: &Json) -> Option<String> {
    config
        .get("architectures")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_string)
}

/// The chat template: `chat_template` of `tokenizer_config.json` (a string, or the `default`
/// entry of a list of named templates), else `chat_template.jinja`. Returns (where, text).
pub fn chat_template(dir: &Path) -> Option<(String, String)> {
    if let Ok(Some(cfg)) = read_json(&dir.join("tokenizer_config.json")) {
        match cfg.get("chat_template") {
            Some(Json::String(s)) => {
                return Some(("tokenizer_config.json".into(), s.clone()));
            }
            Some(Json::Array(list)) => {
                let pick = list
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                    .or_else(|| list.first());
                if let Some(s) = pick.and_then(|t| t.get("template")).and_then(Json::as_str) {
                    return Some(("tokenizer_config.json".into(), s.to_string()));
                }
            }
            _ => {}
        }
    }
    let jinja = dir.join("chat_template.jinja");
    std::fs::read_to_string(jinja)
        .ok()
        .map(|s| ("chat_template.jinja".into(), s))
}

/// What `tokenizer.json` and `tokenizer_config.json` say about the tokenizer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenizerFacts {
    /// `model.type` (`BPE`, `Unigram`, `WordPiece`, `WordLevel`).
    pub model: Option<String>,
    /// Vocabulary entries plus added tokens outside it.
    pub vocab_size: Option<u64>,
    /// (role, id, text) of the special tokens `tokenizer_config.json` names.
    pub special: Vec<(String, Option<u64>, String)>,
    /// Why the files could not be read, if they could not.
    pub error: Option<String>,
}

/// Reads the tokenizer facts of `dir`.
pub fn tokenizer(dir: &Path) -> TokenizerFacts {
    let mut facts = TokenizerFacts::default();
    let tok = match read_json(&dir.join("tokenizer.json")) {
        Ok(t) => t,
        Err(e) => {
            facts.error = Some(e);
            None
        }
    };
    let mut ids: Vec<(String, u64)> = Vec::new();
    if let Some(tok) = &tok {
        let model = tok.get("model");
        facts.model = model
            .and_then(|m| m.get("type"))
            .and_then(Json::as_str)
            .map(str::to_string);
        let vocab = model.and_then(|m| m.get("vocab"));
        let mut size = match vocab {
            Some(Json::Object(m)) => {
                ids.extend(m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))));
                m.len() as u64
            }
            Some(Json::Array(a)) => a.len() as u64,
            _ => 0,
        };
        for added in tok
            .get("added_tokens")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(id), Some(text)) = (
                added.get("id").and_then(Json::as_u64),
                added.get("content").and_then(Json::as_str),
            ) else {
                continue;
            };
            if id >= size {
                size = id.saturating_add(1);
            }
            ids.push((text.to_string(), id));
        }
        facts.vocab_size = (size > 0).then_some(size);
    }
    if let Ok(Some(cfg)) = read_json(&dir.join("tokenizer_config.json")) {
        for role in ["bos", "eos", "unk", "pad"] {
            let text = match cfg.get(format!("{role}_token").as_str()) {
                Some(Json::String(s)) => s.clone(),
                Some(obj) => match obj.get("content").and_then(Json::as_str) {
                    Some(s) => s.to_string(),
                    None => continue,
                },
                None => continue,
            };
            let id = ids.iter().find(|(t, _)| *t == text).map(|(_, id)| *id);
            facts.special.push((role.to_string(), id, text));
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_config_answers_what_the_top_level_lacks() {
        let c = serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"hidden_size": 640, "num_hidden_layers": 18},
            "num_hidden_layers": null
        });
        assert_eq!(uint(&c, "hidden_size"), Some(640));
        assert_eq!(uint(&c, "num_hidden_layers"), Some(18));
        assert_eq!(
            architecture(&c).as_deref(),
            Some("Gemma3ForConditionalGeneration")
        );
    }

    #[test]
    fn tokenizer_files_give_kind_size_and_special_ids() {
        let d = tempfile::tempdir().unwrap();
        let tok = serde_json::json!({
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "<s>": 2}},
            "added_tokens": [{"id": 3, "content": "<|end|>"}]
        });
        std::fs::write(d.path().join("tokenizer.json"), tok.to_string()).unwrap();
        let cfg = serde_json::json!({
            "bos_token": "<s>",
            "eos_token": {"content": "<|end|>"},
            "chat_template": [{"name": "default", "template": "{{ x }}"}]
        });
        std::fs::write(d.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let f = tokenizer(d.path());
        assert_eq!(f.model.as_deref(), Some("BPE"));
        assert_eq!(f.vocab_size, Some(4));
        assert_eq!(
            f.special,
            vec![
                ("bos".into(), Some(2), "<s>".into()),
                ("eos".into(), Some(3), "<|end|>".into())
            ]
        );
        assert_eq!(
            chat_template(d.path()).map(|t| t.1).as_deref(),
            Some("{{ x }}")
        );
    }
}
