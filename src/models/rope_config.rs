//! A model's RoPE as its configuration describes it, read from either `config.json`
//! generation (`rope_theta` + `rope_scaling`, or transformers 5's `rope_parameters`, flat or
//! per layer type) or GGUF metadata, and built into a [`Rope`]. Every RoPE type mlcli
//! implements is read here, once; any other type, or a key that would change the maths in a
//! way mlcli does not implement, is refused naming the file, the key and the value.

use super::layers::rope::{llama3_freq_factors, Llama3Scaling, Rope, Style};
use super::values::{opt_positive, positive, refuse_gguf, Accepted, GgufRefusal};
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::{is_positive, HfConfig};
use crate::formats::weights::Vb;
use crate::{Error, Result};

/// RoPE types this build implements (`rope_type` in `config.json`).
pub const ROPE_TYPES: &str = "default, linear, dynamic, yarn, llama3, longrope, proportional";

/// YaRN keys of llama.cpp's that transformers' YaRN has no counterpart for.
const YARN_REFUSED: &[GgufRefusal] = &[
    GgufRefusal {
        key: "rope.scaling.yarn_ext_factor",
        accepted: Accepted::Number(1.0),
        supported: "1.0 (transformers' YaRN)",
    },
    GgufRefusal {
        key: "rope.scaling.yarn_log_multiplier",
        accepted: Accepted::Number(0.0),
        supported: "0 (transformers' YaRN)",
    },
];

/// How a model stretches its rotary frequencies.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Trained frequencies as they are.
    None,
    /// Positions divided by this factor.
    Linear(f64),
    /// Dynamic NTK: past `original` positions the base grows with the sequence.
    Dynamic {
        /// `factor`.
        factor: f64,
        /// The trained context (`max_position_embeddings`).
        original: usize,
    },
    /// llama3's per-frequency scaling (GGUF files carry it precomputed as `rope_freqs`).
    Llama3(Llama3Scaling),
    /// YaRN: frequencies blended between interpolation and extrapolation, cos/sin scaled.
    Yarn(Yarn),
    /// LongRoPE (Phi-3): per-frequency divisors, short within the original context and long
    /// past it, and a magnitude on cos/sin.
    LongRope(LongRope),
    /// Proportional RoPE (Gemma 4's global layers): the frequencies of the whole head, of
    /// which only the first `partial` share turn (the rest stand still), positions divided
    /// by `factor`. Unlike partial RoPE, pairs are `(i, i + head_dim / 2)` over the whole
    /// head, and the frequencies are those of the whole head width.
    Proportional {
        /// `partial_rotary_factor` (1 when absent).
        partial: f64,
        /// `factor` (1 when absent).
        factor: f64,
    },
}

/// YaRN's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// `factor`.
    pub factor: f64,
    /// `original_max_position_embeddings`.
    pub original: f64,
    /// `beta_fast` (32).
    pub beta_fast: f64,
    /// `beta_slow` (1).
    pub beta_slow: f64,
    /// The magnitude applied to cos/sin (`attention_factor`, else from `factor`, `mscale`,
    /// `mscale_all_dim`).
    pub magnitude: f64,
    /// Whether the correction range is rounded outwards to whole dimensions (`truncate`).
    pub truncate: bool,
}

/// LongRoPE's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    /// Divisors within the original context.
    pub short: Vec<f64>,
    /// Divisors past it.
    pub long: Vec<f64>,
    /// `original_max_position_embeddings`.
    pub original: usize,
    /// The magnitude applied to cos/sin.
    pub magnitude: f64,
}

/// A model's rotary embedding, as its configuration describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Frequency base (`rope_theta`, `{arch}.rope.freq_base`).
    pub base: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// Where one layer type's RoPE parameters are in a `config.json`.
struct Params {
    /// The object holding `rope_type` and its keys (absent: defaults).
    obj: Option<HfConfig>,
    /// Its name in error messages.
    key: String,
    /// What the family allows beyond the RoPE types' own keys.
    allow: Allow,
}

/// What a family's RoPE may carry beyond the keys of its `rope_type`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Allow {
    /// `partial_rotary_factor` other than 1 (the family rotates part of each head).
    pub partial: bool,
    /// Keys that do not change the maths for this family (Qwen3.5's `mrope_section` and
    /// `mrope_interleaved`: text positions are equal on every axis, so multimodal RoPE is
    /// plain RoPE on text).
    pub neutral: &'static [&'static str],
}

impl RopeConfig {
    /// Unscaled RoPE with `base`.
    pub fn plain(base: f64) -> Self {
        Self {
            base,
            scaling: RopeScaling::None,
        }
    }

    /// Reads `{arch}.rope.freq_base` (else `default_base`) and `{arch}.rope.scaling.*`.
    /// llama3 scaling is not a metadata type: llama.cpp's converter stores its factors as the
    /// `rope_freqs` tensor, which [`RopeConfig::build`] applies; LongRoPE's factors are the
    /// `rope_factors_long/short` tensors, which the family reads.
    pub fn from_gguf(g: &Gguf, arch: &str, default_base: f64) -> Result<Self> {
        Self::gguf(g, arch, default_base, YARN_REFUSED)
    }

    /// [`RopeConfig::from_gguf`] for llama.cpp's `deepseek2` files, whose YaRN carries
    /// `rope.scaling.yarn_log_multiplier` (0.1 × `mscale_all_dim`, DeepSeek's softmax-scale
    /// term): returns `mscale_all_dim` beside the RoPE (0 when absent) and, as llama.cpp does
    /// for this architecture (it takes `mscale` equal to `mscale_all_dim`), rotates with
    /// magnitude 1.
    pub fn from_gguf_deepseek(g: &Gguf, arch: &str, default_base: f64) -> Result<(Self, f64)> {
        let mut rope = Self::gguf(g, arch, default_base, &YARN_REFUSED[..1])?;
        let key = format!("{arch}.rope.scaling.yarn_log_multiplier");
        let log_mul = g.opt(&key, Gguf::float)?.unwrap_or(0.0);
        if let RopeScaling::Yarn(y) = &mut rope.scaling {
            y.magnitude = 1.0;
        }
        Ok((rope, log_mul / 0.1))
    }

    fn gguf(g: &Gguf, arch: &str, default_base: f64, refused: &[GgufRefusal]) -> Result<Self> {
        let k = |s: &str| format!("{arch}.{s}");
        let base = opt_positive(g, &k("rope.freq_base"))?.unwrap_or(default_base);
        let scaling = match g.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear(positive(g, &k("rope.scaling.factor"))?),
            Some("yarn") => {
                refuse_gguf(g, arch, refused)?;
                let factor = positive(g, &k("rope.scaling.factor"))?;
                let attn = opt_positive(g, &k("rope.scaling.attn_factor"))?.unwrap_or(1.0);
                RopeScaling::Yarn(Yarn {
                    factor,
                    original: positive(g, &k("rope.scaling.original_context_length"))?,
                    beta_fast: opt_positive(g, &k("rope.scaling.yarn_beta_fast"))?.unwrap_or(32.0),
                    beta_slow: opt_positive(g, &k("rope.scaling.yarn_beta_slow"))?.unwrap_or(1.0),
                    magnitude: attn * yarn_mscale(factor, 1.0),
                    truncate: true,
                })
            }
            Some(other) => {
                return Err(Error::UnsupportedConfig(format!(
                    "{}: '{other}' is not supported; supported: none, linear, yarn, llama3 \
                     (rope_freqs)",
                    k("rope.scaling.type")
                )))
            }
        };
        Ok(Self { base, scaling })
    }

    /// Reads the RoPE of a `config.json` whose layers all share one: transformers 5's flat
    /// `rope_parameters`, or `rope_theta` (else `default_base`) and `rope_scaling`.
    pub fn from_hf(h: &HfConfig, default_base: f64) -> Result<Self> {
        if let Some(types) = per_layer_type(h) {
            return Err(Error::UnsupportedConfig(format!(
                "{}: rope_parameters is given per layer type ({types}), which this family does \
                 not have",
                h.origin()
            )));
        }
        let base = h.opt_positive("rope_theta")?;
        match h.sub("rope_parameters") {
            Some(p) => Self::read(
                h,
                Params {
                    obj: Some(p),
                    key: "rope_parameters".into(),
                    allow: Allow::default(),
                },
                base.unwrap_or(default_base),
            ),
            None => Self::read(
                h,
                Params {
                    obj: h.sub("rope_scaling"),
                    key: "rope_scaling".into(),
                    allow: Allow::default(),
                },
                base.unwrap_or(default_base),
            ),
        }
    }

    /// Reads the RoPE of layers of `layer_type` (`sliding_attention`, `full_attention`) from
    /// transformers 5's per-layer-type `rope_parameters`; `None` when the config has none.
    pub fn from_hf_layer_type(
        h: &HfConfig,
        layer_type: &str,
        default_base: f64,
    ) -> Result<Option<Self>> {
        if per_layer_type(h).is_none() {
            return Ok(None);
        }
        let Some(all) = h.sub("rope_parameters") else {
            return Ok(None);
        };
        let Some(p) = all.sub(layer_type) else {
            return Err(Error::MalformedConfig {
                file: h.origin().to_string(),
                key: format!("rope_parameters.{layer_type}: "),
                why: "missing: the model has layers of this type".into(),
            });
        };
        Self::read(
            h,
            Params {
                obj: Some(p),
                key: format!("rope_parameters.{layer_type}: "),
                allow: Allow::default(),
            },
            default_base,
        )
        .map(Some)
    }

    /// Reads the RoPE of a `config.json` whose layers share one that may rotate only part
    /// of each head: the RoPE and its `partial_rotary_factor` (in `rope_parameters`, else at
    /// the top level, else `default_partial`), with `allow.neutral` keys accepted.
    pub fn from_hf_partial(
        h: &HfConfig,
        default_base: f64,
        default_partial: f64,
        neutral: &'static [&'static str],
    ) -> Result<(Self, f64)> {
        let allow = Allow {
            partial: true,
            neutral,
        };
        let base = h.opt_positive("rope_theta")?.unwrap_or(default_base);
        let (obj, key) = match h.sub("rope_parameters") {
            Some(p) => (Some(p), "rope_parameters"),
            None => (h.sub("rope_scaling"), "rope_scaling"),
        };
        let factor = match obj.as_ref().map(|o| o.opt_float("partial_rotary_factor")) {
            Some(f) => f?,
            None => None,
        };
        let factor = match factor {
            Some(f) => f,
            None => h
                .opt_float("partial_rotary_factor")?
                .unwrap_or(default_partial),
        };
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::UnsupportedConfig(format!(
                "{}: partial_rotary_factor = {factor} is not supported; supported: a fraction \
                 in (0, 1]",
                h.origin()
            )));
        }
        let p = Params {
            obj,
            key: key.into(),
            allow,
        };
        Ok((Self::read(h, p, base)?, factor))
    }

    fn read(h: &HfConfig, p: Params, default_base: f64) -> Result<Self> {
        let unsupported = |key: &str, value: String, supported: &str| {
            Error::UnsupportedConfig(format!(
                "{}: {}.{key} = {value} is not supported; supported: {supported}",
                h.origin(),
                p.key
            ))
        };
        let Some(o) = &p.obj else {
            if !p.allow.partial {
                check_partial(h, None, &p.key)?;
            }
            return Ok(Self::plain(default_base));
        };
        let base = o.opt_positive("rope_theta")?.unwrap_or(default_base);
        let kind = match o.opt_str("rope_type")? {
            Some(t) => t.to_string(),
            None => o.opt_str("type")?.unwrap_or("default").to_string(),
        };
        // Proportional RoPE is defined by its partial rotary factor.
        if !p.allow.partial && kind != "proportional" {
            check_partial(h, Some(o), &p.key)?;
        }
        let keys: &[&str] = match kind.as_str() {
            "default" => &[],
            "linear" => &["factor"],
            "dynamic" => &["factor"],
            "llama3" => &[
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            ],
            "yarn" => &[
                "factor",
                "original_max_position_embeddings",
                "attention_factor",
                "beta_fast",
                "beta_slow",
                "mscale",
                "mscale_all_dim",
                "truncate",
            ],
            "longrope" | "su" => &[
                "short_factor",
                "long_factor",
                "factor",
                "original_max_position_embeddings",
                "attention_factor",
            ],
            "proportional" => &["factor", "partial_rotary_factor"],
            other => return Err(unsupported("rope_type", format!("'{other}'"), ROPE_TYPES)),
        };
        // Keys every type may carry without changing the maths.
        const NEUTRAL: &[&str] = &[
            "rope_type",
            "type",
            "rope_theta",
            "partial_rotary_factor",
            "original_max_position_embeddings",
        ];
        for key in o.map().keys() {
            let neutral =
                NEUTRAL.contains(&key.as_str()) || p.allow.neutral.contains(&key.as_str());
            if !neutral && !keys.contains(&key.as_str()) {
                let allowed: Vec<&str> = keys.to_vec();
                return Err(unsupported(
                    key,
                    o.map()[key].to_string(),
                    &format!(
                        "for rope_type '{kind}' the keys {}",
                        if allowed.is_empty() {
                            "rope_theta".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
        }
        let positive = |key: &str| -> Result<f64> {
            let v = o.float(key)?;
            if is_positive(v) {
                Ok(v)
            } else {
                Err(Error::MalformedConfig {
                    file: h.origin().to_string(),
                    key: format!("{}.{key}: ", p.key),
                    why: format!("{v} is not a positive finite number"),
                })
            }
        };
        let scaling = match kind.as_str() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear(positive("factor")?),
            "dynamic" => RopeScaling::Dynamic {
                factor: positive("factor")?,
                original: h.usize("max_position_embeddings")?,
            },
            "proportional" => {
                let partial = o.opt_float("partial_rotary_factor")?.unwrap_or(1.0);
                if !(partial > 0.0 && partial <= 1.0) {
                    return Err(unsupported(
                        "partial_rotary_factor",
                        partial.to_string(),
                        "a fraction in (0, 1]",
                    ));
                }
                RopeScaling::Proportional {
                    partial,
                    factor: match o.opt_float("factor")? {
                        Some(_) => positive("factor")?,
                        None => 1.0,
                    },
                }
            }
            "llama3" => RopeScaling::Llama3(Llama3Scaling {
                factor: positive("factor")?,
                low_freq_factor: positive("low_freq_factor")?,
                high_freq_factor: positive("high_freq_factor")?,
                original_context: positive("original_max_position_embeddings")?,
            }),
            "yarn" => {
                let original = positive("original_max_position_embeddings")?;
                let factor = match o.opt_float("factor")? {
                    Some(_) => positive("factor")?,
                    None => h.usize("max_position_embeddings")? as f64 / original,
                };
                let magnitude = match o.opt_float("attention_factor")? {
                    Some(_) => positive("attention_factor")?,
                    None => match (o.opt_float("mscale")?, o.opt_float("mscale_all_dim")?) {
                        (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                            yarn_mscale(factor, m) / yarn_mscale(factor, all)
                        }
                        _ => yarn_mscale(factor, 1.0),
                    },
                };
                RopeScaling::Yarn(Yarn {
                    factor,
                    original,
                    beta_fast: o.opt_positive("beta_fast")?.unwrap_or(32.0),
                    beta_slow: o.opt_positive("beta_slow")?.unwrap_or(1.0),
                    magnitude,
                    truncate: o.opt_bool("truncate")?.unwrap_or(true),
                })
            }
            _ => {
                let original = o.usize("original_max_position_embeddings")?;
                let factor = match o.opt_float("factor")? {
                    Some(_) => positive("factor")?,
                    None => h.usize("max_position_embeddings")? as f64 / original as f64,
                };
                let magnitude = match o.opt_float("attention_factor")? {
                    Some(_) => positive("attention_factor")?,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope(LongRope {
                    short: floats(h, o, &p.key, "short_factor")?,
                    long: floats(h, o, &p.key, "long_factor")?,
                    original,
                    magnitude,
                })
            }
        };
        Ok(Self { base, scaling })
    }

    /// The rotary embedding for heads of `head_dim` in the weights' `style`, with GGUF's
    /// precomputed `model.rope_freqs.weight` when `vb` holds it (llama3 scaling of a GGUF,
    /// Gemma 4's proportional RoPE).
    pub fn build(&self, vb: &Vb, head_dim: usize, style: Style) -> Result<Rope> {
        let file = match vb.contains("model.rope_freqs.weight") {
            true => Some(
                vb.tensor("model.rope_freqs.weight", &[head_dim / 2])?
                    .to_vec1::<f32>()?,
            ),
            false => None,
        };
        self.build_with(file.as_deref(), head_dim, style)
    }

    /// [`RopeConfig::build`] without the file's `rope_freqs` (for layers it does not apply
    /// to, as Gemma 4's sliding-window layers).
    pub fn build_plain(&self, head_dim: usize, style: Style) -> Result<Rope> {
        self.build_with(None, head_dim, style)
    }

    fn build_with(&self, file: Option<&[f32]>, head_dim: usize, style: Style) -> Result<Rope> {
        let mut rope = Rope::new(head_dim, self.base, style);
        if let Some(f) = file {
            rope = rope.with_freq_factors(f)?;
        }
        let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(match &self.scaling {
            RopeScaling::None => rope,
            RopeScaling::Linear(f) => rope.with_linear_scaling(*f as f32),
            RopeScaling::Dynamic { factor, original } => {
                rope.with_dynamic_ntk(*factor, *original, self.base)
            }
            RopeScaling::Llama3(s) => {
                rope.with_freq_factors(&llama3_freq_factors(head_dim, self.base, *s))?
            }
            RopeScaling::Yarn(y) => rope
                .with_freq_factors(&yarn_freq_factors(head_dim, self.base, y))?
                .with_magnitude(y.magnitude as f32),
            RopeScaling::LongRope(l) => rope
                .with_freq_factors(&to_f32(&l.short))?
                .with_long_factors(l.original, &to_f32(&l.long))?
                .with_magnitude(l.magnitude as f32),
            RopeScaling::Proportional { partial, factor } => rope
                .with_freq_factors(&proportional_freq_factors(head_dim, *partial))?
                .with_linear_scaling(*factor as f32),
        })
    }
}

/// Proportional RoPE as per-frequency divisors of the whole head's frequencies: 1 for the
/// `floor(partial · head_dim / 2)` fastest ones, infinite (a frequency of 0: cos 1, sin 0)
/// for the rest, as transformers' zeroed inverse frequencies. llama.cpp's converter stores
/// the same as `rope_freqs` with 1e30 for infinity.
pub fn proportional_freq_factors(head_dim: usize, partial: f64) -> Vec<f32> {
    let turning = ((partial * head_dim as f64) / 2.0).floor() as usize;
    (0..head_dim / 2)
        .map(|i| if i < turning { 1.0 } else { f32::INFINITY })
        .collect()
}

/// YaRN's magnitude for `factor` (`0.1 · m · ln(factor) + 1`, 1 when not stretched).
pub fn yarn_mscale(factor: f64, m: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

/// YaRN's frequencies as per-frequency divisors of the unscaled ones: fast frequencies keep
/// their speed (extrapolation), slow ones are divided by `factor` (interpolation), and a
/// linear ramp between the correction dimensions blends the two.
pub fn yarn_freq_factors(head_dim: usize, base: f64, y: &Yarn) -> Vec<f32> {
    let d = head_dim as f64;
    let correction = |rotations: f64| {
        d * (y.original / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction(y.beta_fast), correction(y.beta_slow));
    if y.truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, high) = (low.max(0.0), high.min(d - 1.0));
    let span = if low == high { 0.001 } else { high - low };
    (0..head_dim / 2)
        .map(|i| {
            let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
            let extrapolate = 1.0 - ramp;
            // inv_freq = inv_freq_interp·(1 − e) + inv_freq_extrap·e, inv_freq_interp =
            // inv_freq_extrap / factor: the divisor of the unscaled frequency is its inverse.
            let kept = (1.0 - extrapolate) / y.factor + extrapolate;
            (1.0 / kept) as f32
        })
        .collect()
}

/// The layer types of a per-layer-type `rope_parameters` (`{sliding_attention: {…}, …}`).
fn per_layer_type(h: &HfConfig) -> Option<String> {
    let p = h.sub("rope_parameters")?;
    let types: Vec<&String> = p
        .map()
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k)
        .collect();
    (!types.is_empty()).then(|| {
        types
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Refuses a partial rotary factor other than 1 (top level or inside the RoPE parameters).
fn check_partial(h: &HfConfig, o: Option<&HfConfig>, key: &str) -> Result<()> {
    let found = [
        (
            o.map(|o| o.opt_float("partial_rotary_factor"))
                .transpose()?
                .flatten(),
            format!("{key}.partial_rotary_factor"),
        ),
        (
            h.opt_float("partial_rotary_factor")?,
            "partial_rotary_factor".to_string(),
        ),
    ];
    for (value, name) in found {
        if let Some(f) = value {
            if f != 1.0 {
                return Err(Error::UnsupportedConfig(format!(
                    "{}: {name} = {f} (RoPE over part of each head) is not supported; \
                     supported: 1.0",
                    h.origin()
                )));
            }
        }
    }
    Ok(())
}

/// A list of numbers under `key` of `o`.
fn floats(h: &HfConfig, o: &HfConfig, at: &str, key: &str) -> Result<Vec<f64>> {
    let bad = |why: &str| Error::MalformedConfig {
        file: h.origin().to_string(),
        key: format!("{at}.{key}: "),
        why: why.to_string(),
    };
    match o.get(key) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| bad("holds an entry that is not a positive number"))
            })
            .collect(),
        Some(_) => Err(bad("is not a list of numbers")),
        None => Err(bad("missing")),
    }
}

#[cfg(test)]
mod tests;
