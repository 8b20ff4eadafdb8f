//! A hostile or broken Hub and package index on 127.0.0.1 cannot make `mlcli pull` write
//! outside its caches, loop forever or write more than it announced: names sent by the server
//! (commit ids, etags, tree paths, wheel filenames) and the user's `--revision` are checked
//! before they become paths; pagination is bounded; a body is cut at its announced size. Also:
//! several pulls of one model at once all succeed.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::hub::{bytes, FakeHub, File, Repo};
use support::index::{Api, FakeIndex, Wheel};
use support::server::{Reply, Server};
use support::{files_under, Env};

fn env_for(url: &str) -> Env {
    let mut env = Env::new();
    env.set("HF_ENDPOINT", url);
    env
}

/// Every file under the private home, as paths relative to it: nothing may appear outside
/// the caches (`hf/hub`, `xdg/mlcli`).
fn stray_files(env: &Env) -> Vec<String> {
    files_under(env.dir.path())
        .into_iter()
        .filter_map(|p| {
            let rel = p
                .strip_prefix(env.dir.path())
                .ok()?
                .to_string_lossy()
                .into_owned();
            (!rel.starts_with("hf/hub/") && !rel.starts_with("xdg/mlcli/")).then_some(rel)
        })
        .collect()
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A one-file Hub whose answers `hostile` may replace: (api/resolve path, reply).
fn hub(hostile: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> Server {
    let content = bytes(1000, 7);
    Server::start(move |req| {
        if let Some(r) = hostile(&req.path) {
            return r;
        }
        let sha = support::hub::hex(&<sha2::Sha256 as sha2::Digest>::digest(&content));
        if req.path.starts_with("/api/models/o/r/revision/") {
            Reply::json(&serde_json::json!({"sha": COMMIT}))
        } else if req.path.starts_with("/api/models/o/r/tree/") {
            Reply::json(
                &serde_json::json!([{"type": "file", "path": "m-Q4_K_M.gguf",
                "size": content.len(), "oid": "a".repeat(40),
                "lfs": {"oid": sha, "size": content.len()}}]),
            )
        } else if req.path.starts_with("/o/r/resolve/") {
            Reply::ranged(req, &content)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", format!("\"{sha}\""))
                .header("X-Linked-Size", content.len().to_string())
        } else {
            Reply::new(404)
        }
    })
}

/// Runs mlcli, killing it after 20 s (a hostile server must not hold it longer); returns
/// (exit code, stderr).
fn run_bounded(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut child = env
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("mlcli {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(env: &Env, args: &[&str], needles: &[&str]) {
    let (code, stderr) = run_bounded(env, args);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' missing from: {stderr}");
    }
    assert_eq!(stray_files(env), Vec::<String>::new());
}

#[test]
fn a_well_formed_fake_hub_works_so_the_refusals_below_are_about_the_names() {
    let server = hub(|_| None);
    let env = env_for(&server.base);
    let path = env.run(&["pull", "o/r:q4_k_m"]).path();
    assert!(path.is_file());
    assert_eq!(stray_files(&env), Vec::<String>::new());
}

#[test]
fn an_etag_that_is_a_path_is_refused() {
    let server = hub(|path| {
        path.starts_with("/o/r/resolve/").then(|| {
            Reply::new(200)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", "\"../../../../../../escaped\"")
                .header("X-Linked-Size", "1000")
        })
    });
    let env = env_for(&server.base);
    assert_refused(&env, &["pull", "o/r:q4_k_m"], &["blob id", "escaped"]);
}

#[test]
fn a_commit_id_that_is_a_path_is_refused() {
    let server = hub(|path| {
        path.starts_with("/api/models/o/r/revision/")
            .then(|| Reply::json(&serde_json::json!({"sha": "../../../../escaped"})))
    });
    let env = env_for(&server.base);
    assert_refused(
        &env,
        &["pull", "o/r:q4_k_m"],
        &["commit id", "40 hex digits"],
    );
}

#[test]
fn a_tree_path_that_leaves_the_repository_is_refused() {
    let repo = Repo::new(
        "org/evil",
        vec![File::lfs("../../../../escaped-Q4_K_M.gguf", bytes(100, 1))],
    );
    let fake = FakeHub::start(vec![repo]);
    let env = env_for(fake.url());
    assert_refused(&env, &["pull", "org/evil:q4_k_m"], &["file path", "'..'"]);
}

#[test]
fn a_tree_listing_that_links_to_itself_ends_at_once() {
    let server = hub(|path| {
        path.starts_with("/api/models/o/r/tree/").then(|| {
            Reply::json(&serde_json::json!([])).header(
                "Link",
                "</api/models/o/r/tree/x?recursive=true>; rel=\"next\"",
            )
        })
    });
    let env = env_for(&server.base);
    assert_refused(&env, &["pull", "o/r:q4_k_m"], &["loop"]);
    let pages = server.requests("/api/models/o/r/tree/").len();
    assert!(pages <= 3, "{pages} tree requests");
}

#[test]
fn a_body_longer_than_announced_is_cut_at_the_announced_size() {
    let server = hub(|path| {
        path.starts_with("/o/r/resolve/").then(|| {
            // 1 MiB sent for 1000 bytes announced.
            Reply::new(200)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", format!("\"{}\"", "e".repeat(64)))
                .header("X-Linked-Size", "1000")
                .body(vec![7u8; 1 << 20])
        })
    });
    let env = env_for(&server.base);
    assert_refused(
        &env,
        &["pull", "o/r:q4_k_m"],
        &["past the announced 1000 bytes"],
    );
    let biggest = files_under(env.dir.path())
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    assert!(biggest <= 1000, "a file of {biggest} bytes was written");
}

#[test]
fn a_revision_that_is_a_path_is_refused_before_any_request() {
    let server = hub(|_| None);
    let env = env_for(&server.base);
    let out = env.run(&["pull", "o/r:q4_k_m", "--revision", "../../../../escaped"]);
    let err = out.failure(2);
    assert!(err.contains("--revision") && err.contains("'..'"), "{err}");
    assert!(server.log().is_empty(), "{:?}", server.log());
    assert_eq!(stray_files(&env), Vec::<String>::new());
}

#[test]
fn a_wheel_filename_that_is_a_path_is_never_downloaded() {
    let index = FakeIndex::start(Api::Json);
    let w = Wheel::new("evilt", "1").file("m.gguf", vec![1u8; 64]);
    index.add_raw(
        "evilt",
        "evilt-1/../../../../../7-py3-none-any.whl",
        w.build(),
        "0",
    );
    let mut env = Env::new();
    env.set("PIP_INDEX_URL", &index.url());
    assert_refused(&env, &["pull", "pypi:evilt"], &["evilt"]);
    assert_eq!(index.wheel_downloads(), 0);
}

#[test]
fn several_pulls_of_one_model_at_once_all_succeed() {
    let repo = Repo::new(
        "org/m-GGUF",
        vec![
            File::lfs("m-Q4_K_M.gguf", bytes(400_000, 1)),
            File::small("README.md", "# m\n"),
        ],
    );
    let fake = FakeHub::start(vec![repo.clone()]);
    let env = env_for(fake.url());
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.command(&["pull", "org/m-GGUF:q4_k_m"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            std::fs::read(Path::new(&path)).unwrap(),
            repo.file("m-Q4_K_M.gguf").content
        );
    }
    let sha = repo.file("m-Q4_K_M.gguf").sha256();
    assert_eq!(fake.cdn.requests(&format!("/cdn/{sha}")).len(), 1);
}
