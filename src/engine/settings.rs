//! Sampling settings by name — one vocabulary for the flags, `/set`, the catalogue's
//! parameters and `-v` — and their sources merged by precedence: a command-line flag, then the
//! catalogue's parameters for the alias, then the model's own recommendations, then mlcli's
//! defaults. Every value remembers where it came from.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::sampler::Params;
use crate::{Error, Result};

/// Every setting, in the order they are shown.
pub const NAMES: &[&str] = &[
    "temp",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "seed",
];

/// The settings one source gives; `None` leaves a value to the sources below it. The field
/// names are the settings' names (`temperature` is accepted for `temp`, as Ollama spells it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Sampling temperature (0 = greedy).
    #[serde(alias = "temperature", skip_serializing_if = "Option::is_none")]
    pub temp: Option<f32>,
    /// Keep the k most likely tokens (0 = all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Nucleus threshold (1 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Drop tokens below this fraction of the top probability (0 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Penalty on recently seen tokens (1 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// Tokens the repeat penalty looks back over (-1 = the context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<i32>,
    /// DRY strength (0 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_multiplier: Option<f32>,
    /// DRY's growth per token of repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_base: Option<f32>,
    /// Repeats DRY lets pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_allowed_length: Option<usize>,
    /// Tokens DRY looks back over (-1 = the context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_penalty_last_n: Option<i32>,
    /// Text that ends a sequence for DRY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_sequence_breakers: Option<Vec<String>>,
}

impl Preset {
    /// The preset a JSON object spells (the catalogue's `params`); unknown names are refused.
    pub fn from_json(params: &serde_json::Map<String, serde_json::Value>) -> Result<Self> {
        serde_json::from_value(serde_json::Value::Object(params.clone())).map_err(|e| {
            Error::InvalidArgument(format!(
                "sampling parameters {}: {e}; settings: {}",
                serde_json::Value::Object(params.clone()),
                NAMES[..NAMES.len() - 1].join(", ")
            ))
        })
    }

    /// True when the preset sets nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Writes every value this preset sets into `p`, recording `source` for each.
    fn apply(&self, p: &mut Params, origins: &mut Origins, source: &Source) {
        let mut from = |name: &'static str| {
            origins.0.insert(name, source.clone());
        };
        let d = &mut p.dry;
        macro_rules! put {
            ($field:ident => $target:expr, $name:literal) => {
                if let Some(v) = &self.$field {
                    $target = v.clone();
                    from($name);
                }
            };
        }
        put!(temp => p.temperature, "temp");
        put!(top_k => p.top_k, "top_k");
        put!(top_p => p.top_p, "top_p");
        put!(min_p => p.min_p, "min_p");
        put!(repeat_penalty => p.repeat_penalty, "repeat_penalty");
        put!(repeat_last_n => p.repeat_last_n, "repeat_last_n");
        put!(dry_multiplier => d.multiplier, "dry_multiplier");
        put!(dry_base => d.base, "dry_base");
        put!(dry_allowed_length => d.allowed_length, "dry_allowed_length");
        put!(dry_penalty_last_n => d.penalty_last_n, "dry_penalty_last_n");
        put!(dry_sequence_breakers => d.sequence_breakers, "dry_sequence_breakers");
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// mlcli's default.
    Default,
    /// The model's own files: `general.sampling.*` or `generation_config.json`.
    Model(&'static str),
    /// The catalogue's parameters for this alias.
    Catalogue(String),
    /// A command-line flag.
    Flag,
    /// The clock (an unseeded run).
    Clock,
    /// `/set` in the chat.
    Set,
    /// A transcript loaded in the chat.
    Transcript,
}

impl Source {
    /// Order of precedence for showing: what the user set first, mlcli's defaults last.
    pub fn rank(&self) -> u8 {
        match self {
            Source::Flag | Source::Set | Source::Transcript => 0,
            Source::Clock => 1,
            Source::Catalogue(_) => 2,
            Source::Model(_) => 3,
            Source::Default => 4,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "mlcli default"),
            Source::Model(what) => write!(f, "model's {what}"),
            Source::Catalogue(alias) => write!(f, "catalogue {alias}"),
            Source::Flag => write!(f, "command line"),
            Source::Clock => write!(f, "clock"),
            Source::Set => write!(f, "/set"),
            Source::Transcript => write!(f, "loaded transcript"),
        }
    }
}

/// Where each setting came from (mlcli's default when not recorded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origins(HashMap<&'static str, Source>);

impl Origins {
    /// Every setting from `source`.
    pub fn all(source: Source) -> Self {
        Self(NAMES.iter().map(|&n| (n, source.clone())).collect())
    }

    /// The source of `name`.
    pub fn of(&self, name: &str) -> &Source {
        self.0.get(name).unwrap_or(&Source::Default)
    }

    /// Records that `name` (one of [`NAMES`]) now comes from `source`.
    pub fn set(&mut self, name: &str, source: Source) {
        if let Some(&n) = NAMES.iter().find(|&&n| n == name) {
            self.0.insert(n, source);
        }
    }

    /// `(name, value, source)` for every setting of `p`, in [`NAMES`] order.
    pub fn describe(&self, p: &Params) -> Vec<(&'static str, String, &Source)> {
        NAMES
            .iter()
            .map(|&n| (n, value(p, n).unwrap_or_default(), self.of(n)))
            .collect()
    }

    /// Fails when a setting is out of range, naming where the value came from.
    pub fn validate(&self, p: &Params) -> Result<()> {
        p.validate().map_err(|setting| Error::InvalidSampling {
            origin: Some(self.of(setting.name).to_string()),
            setting,
        })
    }
}

/// A seed from the clock, for a run or request that gave none.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Merges `layers`, highest precedence first, over mlcli's defaults, with `seed` from its
/// own source; fails when the result has a value out of range.
pub fn resolve(layers: &[(Source, &Preset)], seed: (u64, Source)) -> Result<(Params, Origins)> {
    let mut params = Params::default();
    let mut origins = Origins::default();
    for (source, preset) in layers.iter().rev() {
        preset.apply(&mut params, &mut origins, source);
    }
    params.seed = seed.0;
    origins.0.insert("seed", seed.1);
    origins.validate(&params)?;
    Ok((params, origins))
}

/// The value of setting `name` as text (`None` for an unknown name).
pub fn value(p: &Params, name: &str) -> Option<String> {
    let d = &p.dry;
    Some(match name {
        "temp" => p.temperature.to_string(),
        "top_k" => p.top_k.to_string(),
        "top_p" => p.top_p.to_string(),
        "min_p" => p.min_p.to_string(),
        "repeat_penalty" => p.repeat_penalty.to_string(),
        "repeat_last_n" => p.repeat_last_n.to_string(),
        "dry_multiplier" => d.multiplier.to_string(),
        "dry_base" => d.base.to_string(),
        "dry_allowed_length" => d.allowed_length.to_string(),
        "dry_penalty_last_n" => d.penalty_last_n.to_string(),
        "dry_sequence_breakers" => serde_json::to_string(&d.sequence_breakers).ok()?,
        "seed" => p.seed.to_string(),
        _ => return None,
    })
}

/// Sets `name` to `text` in `p` (breakers as a JSON list of strings, or `none`); the result
/// must pass [`Params::validate`], else `p` is left as it was.
pub fn set(p: &mut Params, name: &str, text: &str) -> std::result::Result<(), String> {
    let bad = |e: &dyn fmt::Display| format!("{name}: '{text}' is not valid: {e}");
    let mut next = p.clone();
    let d = &mut next.dry;
    macro_rules! parse {
        ($target:expr) => {
            $target = text.parse().map_err(|e| bad(&e))?
        };
    }
    match name {
        "temp" => parse!(next.temperature),
        "top_k" => parse!(next.top_k),
        "top_p" => parse!(next.top_p),
        "min_p" => parse!(next.min_p),
        "repeat_penalty" => parse!(next.repeat_penalty),
        "repeat_last_n" => parse!(next.repeat_last_n),
        "dry_multiplier" => parse!(d.multiplier),
        "dry_base" => parse!(d.base),
        "dry_allowed_length" => parse!(d.allowed_length),
        "dry_penalty_last_n" => parse!(d.penalty_last_n),
        "dry_sequence_breakers" if text == "none" => d.sequence_breakers.clear(),
        "dry_sequence_breakers" => {
            d.sequence_breakers = serde_json::from_str(text)
                .map_err(|e| bad(&format!("expected a JSON list of strings or none ({e})")))?
        }
        "seed" => parse!(next.seed),
        other => {
            return Err(format!(
                "unknown setting '{other}'; settings: {}",
                NAMES.join(", ")
            ))
        }
    }
    next.validate().map_err(|e| bad(&e))?;
    *p = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(json: &str) -> Preset {
        match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(m)) => Preset::from_json(&m).unwrap(),
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn flag_beats_catalogue_beats_model_beats_default() {
        let flags = preset(r#"{"temp": 0.7}"#);
        let catalogue = preset(r#"{"temperature": 0.2, "top_p": 0.9, "dry_multiplier": 0.8}"#);
        let model = preset(r#"{"temp": 1.0, "top_p": 0.5, "top_k": 20}"#);
        let (p, o) = resolve(
            &[
                (Source::Flag, &flags),
                (Source::Catalogue("smollm2".into()), &catalogue),
                (Source::Model("general.sampling.*"), &model),
            ],
            (5, Source::Clock),
        )
        .unwrap();
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.dry.multiplier, p.min_p),
            (0.7, 0.9, 20, 0.8, 0.05)
        );
        assert_eq!(o.of("temp"), &Source::Flag);
        assert_eq!(o.of("top_p"), &Source::Catalogue("smollm2".into()));
        assert_eq!(o.of("top_k"), &Source::Model("general.sampling.*"));
        assert_eq!(o.of("min_p"), &Source::Default);
        assert_eq!(o.of("seed"), &Source::Clock);
        let shown = o.describe(&p);
        assert_eq!(shown.len(), NAMES.len());
        assert_eq!(
            shown[0],
            ("temp", "0.7".to_string(), &Source::Flag),
            "{shown:?}"
        );
    }

    #[test]
    fn an_out_of_range_value_is_refused_with_its_source() {
        let bad = preset(r#"{"dry_base": -1}"#);
        let err = resolve(&[(Source::Catalogue("x".into()), &bad)], (0, Source::Flag))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dry_base = -1") && err.contains("source: catalogue x"),
            "{err}"
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let m = serde_json::json!({"temprature": 0.2});
        let err = Preset::from_json(m.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("temprature") && err.contains("dry_base"),
            "{err}"
        );
    }

    #[test]
    fn set_parses_by_name_and_refuses_bad_values() {
        let mut p = Params::default();
        set(&mut p, "dry_multiplier", "0.8").unwrap();
        set(&mut p, "dry_sequence_breakers", r####"["\n", "###"]"####).unwrap();
        assert_eq!(p.dry.multiplier, 0.8);
        assert_eq!(p.dry.sequence_breakers, ["\n", "###"]);
        set(&mut p, "dry_sequence_breakers", "none").unwrap();
        assert!(p.dry.sequence_breakers.is_empty());
        let before = p.clone();
        assert!(set(&mut p, "dry_base", "0.5")
            .unwrap_err()
            .contains("1 or more"));
        assert!(set(&mut p, "top_k", "many").is_err());
        assert!(set(&mut p, "tmep", "1").unwrap_err().contains("temp"));
        assert_eq!(p, before, "a refused value changes nothing");
        for name in NAMES {
            assert!(value(&p, name).is_some(), "{name}");
        }
    }

    #[test]
    fn shipped_catalogue_parameters_are_valid_presets() {
        for e in &crate::store::catalogue::catalogue().models {
            let preset = Preset::from_json(&e.params).unwrap();
            resolve(
                &[(Source::Catalogue(e.alias.clone()), &preset)],
                (0, Source::Flag),
            )
            .unwrap_or_else(|err| panic!("{}: {err}", e.alias));
        }
    }
}
