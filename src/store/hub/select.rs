//! Which files of a repository a reference means: a quant tag (matched case-insensitively
//! against the end of GGUF names), a named file, or by default the safetensors model (weights
//! and the JSON/tokenizer files beside them) or the repository's GGUF. Split GGUFs
//! (`-00001-of-00003.gguf`) always come as a whole.

use std::collections::BTreeMap;

use crate::store::{Error, Result};

/// What to take from a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// The safetensors model if there is one, else the only GGUF or the Q4_K_M one.
    Default,
    /// GGUF files whose quant tag is this (e.g. `Q4_K_M`).
    Quant(String),
    /// This path in the repository.
    File(String),
}

/// The quant tag preferred when a GGUF repository is named without one.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// The files of `files` (repository paths) that `select` means, in download order; the
/// first one is the model file to load (the first shard of a split GGUF).
pub fn select(repo: &str, files: &[String], select: &Select) -> Result<Vec<String>> {
    let not_found = |wanted: String| Error::FileNotFound {
        repo: repo.to_string(),
        wanted,
        available: gguf_list(files),
    };
    match select {
        Select::File(path) => {
            if !files.contains(path) {
                return Err(not_found(format!("'{path}'")));
            }
            match split_of(path) {
                Some((stem, _, total)) => split_group(files, &stem, total),
                None => Ok(vec![path.clone()]),
            }
        }
        Select::Quant(tag) => {
            let groups = gguf_groups(files, |name| quant_matches(name, tag));
            match groups.len() {
                0 => Err(not_found(format!("quant tag '{tag}'"))),
                1 => Ok(groups.into_values().next().unwrap_or_default()),
                _ => Err(Error::AmbiguousQuant {
                    repo: repo.to_string(),
                    tag: tag.clone(),
                    files: groups
                        .into_values()
                        .map(|g| g[0].clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
        Select::Default => {
            let st = safetensors_set(files);
            if !st.is_empty() {
                return Ok(st);
            }
            let all = gguf_groups(files, |name| !name.starts_with("mmproj"));
            if all.len() == 1 {
                return Ok(all.into_values().next().unwrap_or_default());
            }
            let mut preferred = gguf_groups(files, |name| quant_matches(name, DEFAULT_QUANT));
            if preferred.len() == 1 {
                return Ok(preferred.pop_first().map(|(_, g)| g).unwrap_or_default());
            }
            Err(not_found(format!(
                "a default model (no *.safetensors, and not one GGUF or one {DEFAULT_QUANT}); name a quant tag as {repo}:TAG or a file as {repo}/FILE"
            )))
        }
    }
}

/// GGUF models (a single file, or all shards of a split) whose base name passes `keep`,
/// keyed by the first file.
fn gguf_groups(files: &[String], keep: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
    {
        let base = f.rsplit('/').next().unwrap_or(f);
        if !keep(&base.to_ascii_lowercase()) {
            continue;
        }
        let key = match split_of(f) {
            Some((stem, _, _)) => stem,
            None => f.clone(),
        };
        groups.entry(key).or_default().push(f.clone());
    }
    groups
        .into_values()
        .map(|mut g| {
            g.sort();
            (g[0].clone(), g)
        })
        .collect()
}

/// All shards of a split GGUF, checking none is missing.
fn split_group(files: &[String], stem: &str, total: usize) -> Result<Vec<String>> {
    let mut parts: Vec<(usize, String)> = files
        .iter()
        .filter_map(|f| match split_of(f) {
            Some((s, i, t)) if s == stem && t == total => Some((i, f.clone())),
            _ => None,
        })
        .collect();
    parts.sort();
    let found: Vec<usize> = parts.iter().map(|(i, _)| *i).collect();
    if found != (1..=total).collect::<Vec<_>>() {
        return Err(Error::IncompleteSplit {
            name: format!("{stem}-*-of-{total:05}.gguf"),
            found: format!("{found:?}"),
            expected: total,
        });
    }
    Ok(parts.into_iter().map(|(_, f)| f).collect())
}

/// (stem, part, total) of `stem-0000N-of-0000M.gguf`.
pub fn split_of(path: &str) -> Option<(String, usize, usize)> {
    let stem = path.strip_suffix(".gguf")?;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (stem, part) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(part) || !digits(total) {
        return None;
    }
    Some((stem.to_string(), part.parse().ok()?, total.parse().ok()?))
}

/// The file's model name without `.gguf` and the split suffix.
fn gguf_stem(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    match split_of(base) {
        Some((stem, _, _)) => stem,
        None => base.strip_suffix(".gguf").unwrap_or(base).to_string(),
    }
}

/// True when the GGUF's name ends with `tag` after a `-` or `.` (case-insensitive):
/// `Qwen3-8B-Q4_K_M.gguf` is `q4_k_m` but not `q4_k`.
pub fn quant_matches(name: &str, tag: &str) -> bool {
    let stem = gguf_stem(name).to_ascii_lowercase();
    let tag = tag.to_ascii_lowercase();
    stem == tag || stem.ends_with(&format!("-{tag}")) || stem.ends_with(&format!(".{tag}"))
}

/// The quant tag a GGUF's name announces (`Q4_K_M`, `IQ4_XS`, `F16`), if any.
pub fn quant_of(name: &str) -> Option<String> {
    if !name.to_ascii_lowercase().ends_with(".gguf") {
        return None;
    }
    let stem = gguf_stem(name);
    let last = stem.rsplit(['-', '.']).next()?.to_ascii_uppercase();
    let b = last.as_bytes();
    let quant_like = matches!(last.as_str(), "F16" | "F32" | "BF16")
        || (b.len() >= 2 && b[0] == b'Q' && b[1].is_ascii_digit())
        || (b.len() >= 3
            && (last.starts_with("IQ") || last.starts_with("TQ"))
            && b[2].is_ascii_digit());
    quant_like.then_some(last)
}

/// The files of a safetensors model at the repository's top level.
fn safetensors_set(files: &[String]) -> Vec<String> {
    let top: Vec<&String> = files.iter().filter(|f| !f.contains('/')).collect();
    let weights: Vec<&String> = top
        .iter()
        .copied()
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    if weights.is_empty() {
        return Vec::new();
    }
    let has_model = weights.iter().any(|f| !f.starts_with("consolidated"));
    let mut out: Vec<String> = top
        .into_iter()
        .filter(|f| {
            let aux = f.ends_with(".json")
                || f.ends_with(".jinja")
                || *f == "tokenizer.model"
                || *f == "merges.txt";
            let weight =
                f.ends_with(".safetensors") && !(has_model && f.starts_with("consolidated"));
            aux || weight
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// The repository's GGUF files, for error messages.
fn gguf_list(files: &[String]) -> String {
    let g: Vec<&str> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .map(String::as_str)
        .collect();
    if g.is_empty() {
        "none".to_string()
    } else {
        g.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quant_tag_matches_case_insensitively_and_not_as_a_prefix() {
        let f = files(&["M-Q4_K.gguf", "M-Q4_K_M.gguf", "M-Q8_0.gguf", "README.md"]);
        let pick = |t: &str| select("o/r", &f, &Select::Quant(t.into()));
        assert_eq!(pick("q4_k_m").unwrap(), ["M-Q4_K_M.gguf"]);
        assert_eq!(pick("Q4_K").unwrap(), ["M-Q4_K.gguf"]);
        let err = pick("Q5_K_M").unwrap_err().to_string();
        assert!(
            err.contains("M-Q4_K.gguf, M-Q4_K_M.gguf, M-Q8_0.gguf"),
            "{err}"
        );
    }

    #[test]
    fn split_gguf_is_taken_whole_and_in_order() {
        let f = files(&[
            "big-Q8_0-00002-of-00002.gguf",
            "big-Q8_0-00001-of-00002.gguf",
            "big-Q4_K_M.gguf",
        ]);
        let want = [
            "big-Q8_0-00001-of-00002.gguf",
            "big-Q8_0-00002-of-00002.gguf",
        ];
        assert_eq!(
            select("o/r", &f, &Select::Quant("q8_0".into())).unwrap(),
            want
        );
        let named = Select::File("big-Q8_0-00002-of-00002.gguf".into());
        assert_eq!(select("o/r", &f, &named).unwrap(), want);
        let missing = files(&["x-Q8_0-00001-of-00003.gguf", "x-Q8_0-00003-of-00003.gguf"]);
        let named = Select::File("x-Q8_0-00001-of-00003.gguf".into());
        assert!(matches!(
            select("o/r", &missing, &named),
            Err(Error::IncompleteSplit { expected: 3, .. })
        ));
    }

    #[test]
    fn default_prefers_safetensors_then_the_only_or_q4_k_m_gguf() {
        let st = files(&[
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "consolidated.safetensors",
            "tokenizer.json",
            "README.md",
            "onnx/model.onnx",
        ]);
        assert_eq!(
            select("o/r", &st, &Select::Default).unwrap(),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json"
            ]
        );
        let g = files(&["a-Q8_0.gguf", "a-Q4_K_M.gguf", "mmproj-a-f16.gguf"]);
        assert_eq!(
            select("o/r", &g, &Select::Default).unwrap(),
            ["a-Q4_K_M.gguf"]
        );
        let g = files(&["a-Q8_0.gguf", "mmproj-a-f16.gguf"]);
        assert_eq!(
            select("o/r", &g, &Select::Default).unwrap(),
            ["a-Q8_0.gguf"]
        );
        let g = files(&["a-Q8_0.gguf", "a-Q6_K.gguf"]);
        assert!(select("o/r", &g, &Select::Default).is_err());
    }

    #[test]
    fn quant_of_reads_the_tag_from_the_name() {
        assert_eq!(quant_of("Qwen3-8B-Q4_K_M.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(
            quant_of("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("Q4_1")
        );
        assert_eq!(
            quant_of("m-IQ4_XS-00001-of-00002.gguf").as_deref(),
            Some("IQ4_XS")
        );
        assert_eq!(
            quant_of("gemma-3-270m-q4_k_m.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(quant_of("model-f16.gguf").as_deref(), Some("F16"));
        assert_eq!(quant_of("model.gguf"), None);
        assert_eq!(quant_of("model.safetensors"), None);
    }
}
