//! A fake Python package index (simple API as JSON, or as HTML with relative links) serving
//! wheels that the tests build with the `zip` crate: METADATA with Requires-Dist, and a RECORD
//! with each member's hash — or raw archives with whatever member names a test needs.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use mlcli::store::pypi::wheel::record_hash;
use sha2::Digest as _;
use zip::write::SimpleFileOptions;

use super::hub::hex;
use super::server::{Reply, Request, Server};

/// A wheel to build.
pub struct Wheel {
    pub name: String,
    pub version: String,
    /// (path inside the wheel, content).
    pub files: Vec<(String, Vec<u8>)>,
    pub requires: Vec<String>,
}

impl Wheel {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            files: Vec::new(),
            requires: Vec::new(),
        }
    }

    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.into(), content.into()));
        self
    }

    pub fn requires(mut self, req: &str) -> Self {
        self.requires.push(req.into());
        self
    }

    pub fn filename(&self) -> String {
        format!("{}-{}-py3-none-any.whl", self.dist(), self.version)
    }

    fn dist(&self) -> String {
        self.name.replace(['-', '.'], "_")
    }

    /// The archive bytes, with METADATA, WHEEL and RECORD.
    pub fn build(&self) -> Vec<u8> {
        let info = format!("{}-{}.dist-info", self.dist(), self.version);
        let mut metadata = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\n",
            self.name, self.version
        );
        for r in &self.requires {
            metadata.push_str(&format!("Requires-Dist: {r}\n"));
        }
        metadata.push_str("\nA model package.\n");
        let mut members = self.files.clone();
        members.push((format!("{info}/METADATA"), metadata.into_bytes()));
        members.push((
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ));
        let mut record = String::new();
        for (p, c) in &members {
            record.push_str(&format!("{p},{},{}\n", record_hash(c), c.len()));
        }
        record.push_str(&format!("{info}/RECORD,,\n"));
        members.push((format!("{info}/RECORD"), record.into_bytes()));
        zip_of(&members)
    }
}

/// A zip archive of `members` as given (stored, so big test models build fast).
pub fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(members.iter().any(|(_, c)| c.len() > u32::MAX as usize / 2));
    for (p, c) in members {
        w.start_file(p.as_str(), opts).unwrap();
        w.write_all(c).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// How the index describes projects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// PEP 691 JSON with absolute URLs.
    Json,
    /// PEP 503 HTML with relative links.
    Html,
}

/// A published file: (filename, bytes, announced sha256).
pub type Published = (String, Arc<Vec<u8>>, String);

#[derive(Default)]
pub struct State {
    /// Normalized project name → its files.
    pub projects: HashMap<String, Vec<Published>>,
}

pub struct FakeIndex {
    pub server: Server,
    pub state: Arc<Mutex<State>>,
}

impl FakeIndex {
    pub fn start(api: Api) -> FakeIndex {
        let state = Arc::new(Mutex::new(State::default()));
        let s2 = state.clone();
        let base = Arc::new(Mutex::new(String::new()));
        let b2 = base.clone();
        let server = Server::start(move |req| handle(&s2, &b2.lock().unwrap(), api, req));
        *base.lock().unwrap() = server.base.clone();
        FakeIndex { server, state }
    }

    /// `PIP_INDEX_URL`.
    pub fn url(&self) -> String {
        format!("{}/simple", self.server.base)
    }

    pub fn add(&self, w: &Wheel) {
        let bytes = w.build();
        let sha = hex(&sha2::Sha256::digest(&bytes));
        self.add_raw(&w.name, &w.filename(), bytes, &sha);
    }

    /// Publishes `bytes` as `filename` of `project`, announcing `sha256`.
    pub fn add_raw(&self, project: &str, filename: &str, bytes: Vec<u8>, sha256: &str) {
        self.state
            .lock()
            .unwrap()
            .projects
            .entry(normalize(project))
            .or_default()
            .push((filename.into(), Arc::new(bytes), sha256.into()));
    }

    /// GETs of wheel files.
    pub fn wheel_downloads(&self) -> usize {
        self.server
            .log()
            .iter()
            .filter(|l| l.path.starts_with("/files/"))
            .count()
    }
}

fn normalize(n: &str) -> String {
    n.to_ascii_lowercase().replace(['_', '.'], "-")
}

fn handle(state: &Mutex<State>, base: &str, api: Api, req: &Request) -> Reply {
    let st = state.lock().unwrap();
    if let Some(file) = req.path.strip_prefix("/files/") {
        let found = st
            .projects
            .values()
            .flatten()
            .find(|(f, _, _)| f == file)
            .map(|(_, b, _)| b.clone());
        return match found {
            Some(b) => Reply::ranged(req, &b),
            None => Reply::new(404),
        };
    }
    let Some(project) = req
        .path
        .strip_prefix("/simple/")
        .map(|p| p.trim_end_matches('/'))
    else {
        return Reply::new(404);
    };
    let Some(files) = st.projects.get(project) else {
        return Reply::new(404).body("not found");
    };
    let wants_json = req.header("accept").is_some_and(|a| a.contains("json"));
    if api == Api::Json && wants_json {
        let files: Vec<_> = files
            .iter()
            .map(|(f, b, sha)| {
                serde_json::json!({
                    "filename": f,
                    "url": format!("{base}/files/{f}"),
                    "hashes": {"sha256": sha},
                    "size": b.len(),
                })
            })
            .collect();
        return Reply::new(200)
            .header("Content-Type", "application/vnd.pypi.simple.v1+json")
            .body(serde_json::json!({"meta": {"api-version": "1.1"}, "name": project, "files": files}).to_string());
    }
    let mut html = String::from("<!DOCTYPE html><html><body>\n");
    for (f, _, sha) in files {
        html.push_str(&format!(
            "<a href=\"../../files/{f}#sha256={sha}\" data-requires-python=\"&gt;=3.9\">{f}</a><br/>\n"
        ));
    }
    html.push_str("</body></html>\n");
    Reply::new(200)
        .header("Content-Type", "text/html")
        .body(html)
}
