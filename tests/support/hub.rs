//! A fake Hugging Face Hub speaking the subset of its API the store uses — and that Python's
//! `huggingface_hub` uses to download: `/api/models/{repo}/revision/{rev}`, the paginated
//! recursive tree, `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`,
//! `X-Linked-Etag`, `X-Linked-Size`, a 302 to a CDN path for LFS files, and ranged CDN GETs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::Digest as _;

use super::server::{Reply, Request, Server};

/// Tree entries per page (small, so tests cross a page boundary).
const PAGE: usize = 2;

#[derive(Clone, Debug)]
pub struct File {
    pub path: String,
    pub content: Vec<u8>,
    pub lfs: bool,
}

impl File {
    pub fn lfs(path: &str, content: Vec<u8>) -> Self {
        Self {
            path: path.into(),
            content,
            lfs: true,
        }
    }

    pub fn small(path: &str, content: &str) -> Self {
        Self {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            lfs: false,
        }
    }

    pub fn sha256(&self) -> String {
        hex(&sha2::Sha256::digest(&self.content))
    }

    pub fn git_oid(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.content.len()).as_bytes());
        h.update(&self.content);
        hex(&h.finalize())
    }

    /// The blob name in the HF cache.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_oid()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Repo {
    pub id: String,
    pub commit: String,
    pub files: Vec<File>,
    /// Requires `Authorization: Bearer <token>`.
    pub gated: bool,
}

impl Repo {
    pub fn new(id: &str, files: Vec<File>) -> Self {
        let commit = hex(&sha1::Sha1::digest(id.as_bytes()));
        Self {
            id: id.into(),
            commit,
            files,
            gated: false,
        }
    }

    pub fn file(&self, path: &str) -> &File {
        self.files.iter().find(|f| f.path == path).unwrap()
    }
}

/// Faults for the next CDN GET of a blob (by sha256).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Close the connection after this many bytes.
    Cut(usize),
    /// Send this many bytes, then hang for the duration.
    Stall(usize, Duration),
    /// Serve this content instead (every time).
    Corrupt(Vec<u8>),
}

#[derive(Default)]
pub struct State {
    pub repos: Vec<Repo>,
    pub token: String,
    pub faults: HashMap<String, Fault>,
    /// The CDN's base URL.
    pub base: String,
}

/// The Hub's API and resolve endpoints on one port, its CDN (LFS content) on another, as
/// the real Hub redirects LFS downloads to another host.
pub struct FakeHub {
    pub server: Server,
    pub cdn: Server,
    pub state: Arc<Mutex<State>>,
}

impl FakeHub {
    pub fn start(repos: Vec<Repo>) -> FakeHub {
        let state = Arc::new(Mutex::new(State {
            repos,
            token: "hf_secret".into(),
            ..State::default()
        }));
        let s2 = state.clone();
        let server = Server::start(move |req| handle(&s2, req));
        let s3 = state.clone();
        let cdn = Server::start(move |req| match req.path.strip_prefix("/cdn/") {
            Some(sha) => cdn(&s3, req, sha),
            None => Reply::new(404),
        });
        state.lock().unwrap().base = cdn.base.clone();
        FakeHub { server, cdn, state }
    }

    pub fn fault(&self, sha256: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(sha256.into(), fault);
    }

    pub fn url(&self) -> &str {
        &self.server.base
    }
}

fn handle(state: &Mutex<State>, req: &Request) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let path = percent_decode(path);
    let st = state.lock().unwrap();
    let (api, rest) = match path.strip_prefix("/api/models/") {
        Some(r) => (true, r.to_string()),
        None => (false, path.trim_start_matches('/').to_string()),
    };
    let mut parts = rest.splitn(4, '/');
    let id = format!(
        "{}/{}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    );
    let (kind, tail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(repo) = st.repos.iter().find(|r| r.id == id) else {
        return Reply::new(401).header("X-Error-Code", "RepoNotFound");
    };
    if repo.gated && req.header("authorization") != Some(&format!("Bearer {}", st.token)) {
        return Reply::new(401)
            .header("X-Error-Code", "GatedRepo")
            .body("Access to model is restricted");
    }
    let (rev, file) = tail.split_once('/').unwrap_or((tail, ""));
    if rev != "main" && rev != repo.commit {
        return Reply::new(404).header("X-Error-Code", "RevisionNotFound");
    }
    match (api, kind) {
        (true, "revision") => Reply::json(&serde_json::json!({
            "id": repo.id,
            "sha": repo.commit,
            "siblings": repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect::<Vec<_>>(),
        })),
        (true, "tree") => tree(repo, &rev_path(&rest), query),
        (false, "resolve") => resolve(repo, &st.base, req, file),
        _ => Reply::new(404),
    }
}

fn rev_path(rest: &str) -> String {
    format!("/api/models/{rest}")
}

fn tree(repo: &Repo, path: &str, query: &str) -> Reply {
    let cursor: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut entries: Vec<serde_json::Value> = repo
        .files
        .iter()
        .map(|f| {
            let mut e = serde_json::json!({
                "type": "file", "oid": f.git_oid(), "size": f.content.len(), "path": f.path,
            });
            if f.lfs {
                e["lfs"] = serde_json::json!({"oid": f.sha256(), "size": f.content.len(), "pointerSize": 134});
            }
            e
        })
        .collect();
    entries.push(serde_json::json!({"type": "directory", "oid": "0", "size": 0, "path": "onnx"}));
    let page: Vec<_> = entries.iter().skip(cursor).take(PAGE).cloned().collect();
    let mut reply = Reply::json(&serde_json::Value::Array(page));
    if cursor + PAGE < entries.len() {
        // A relative link, resolved against the request URL.
        let next = format!("{path}?recursive=true&cursor={}", cursor + PAGE);
        reply = reply.header("Link", format!("<{next}>; rel=\"next\""));
    }
    reply
}

fn resolve(repo: &Repo, base: &str, req: &Request, path: &str) -> Reply {
    let Some(f) = repo.files.iter().find(|f| f.path == path) else {
        return Reply::new(404).header("X-Error-Code", "EntryNotFound");
    };
    let reply = if f.lfs {
        Reply::new(302)
            .header("Location", format!("{base}/cdn/{}", f.sha256()))
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256()))
            .header("X-Linked-Size", f.content.len().to_string())
    } else {
        Reply::ranged(req, &f.content)
    };
    reply
        .header("X-Repo-Commit", repo.commit.clone())
        .header("ETag", format!("\"{}\"", f.git_oid()))
}

fn cdn(state: &Mutex<State>, req: &Request, sha: &str) -> Reply {
    let mut st = state.lock().unwrap();
    let Some(file) = st
        .repos
        .iter()
        .flat_map(|r| r.files.iter())
        .find(|f| f.lfs && f.sha256() == sha)
        .cloned()
    else {
        return Reply::new(404);
    };
    let fault = match st.faults.get(sha) {
        Some(Fault::Corrupt(_)) => st.faults.get(sha).cloned(),
        _ => st.faults.remove(sha),
    };
    drop(st);
    match fault {
        Some(Fault::Corrupt(bad)) => Reply::ranged(req, &bad),
        Some(Fault::Cut(n)) => Reply {
            cut_after: Some(n),
            ..Reply::ranged(req, &file.content)
        },
        Some(Fault::Stall(n, d)) => Reply {
            cut_after: Some(n),
            stall: Some(d),
            ..Reply::ranged(req, &file.content)
        },
        None => Reply::ranged(req, &file.content),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
