//! `mlcli pull` against a fake Hub on 127.0.0.1: quant tags, split GGUFs, sharded safetensors,
//! resume after a dropped connection and after a killed process, checksum mismatch, 401, 404,
//! no network, `--offline`, and a second pull that downloads nothing.

mod support;

use std::time::{Duration, Instant};

use support::hub::{bytes, FakeHub, Fault, File, Repo};
use support::{files_under, Env};

const MIB: usize = 1 << 20;

fn gguf_repo() -> Repo {
    Repo::new(
        "org/m-GGUF",
        vec![
            File::lfs("m-Q4_K_M.gguf", bytes(300_000, 1)),
            File::lfs("m-Q8_0.gguf", bytes(200_000, 2)),
            File::lfs("big-Q6_K-00001-of-00002.gguf", bytes(50_000, 3)),
            File::lfs("big-Q6_K-00002-of-00002.gguf", bytes(40_000, 4)),
            File::small("README.md", "# m\n"),
        ],
    )
}

fn env_for(hub: &FakeHub) -> Env {
    let mut env = Env::new();
    env.set("HF_ENDPOINT", hub.url());
    env
}

#[test]
fn gguf_is_pulled_by_quant_tag_into_the_hf_cache_layout() {
    let repo = gguf_repo();
    let hub = FakeHub::start(vec![repo.clone()]);
    let env = env_for(&hub);
    let path = env.run(&["pull", "org/m-GGUF:q4_k_m"]).path();
    let want = repo.file("m-Q4_K_M.gguf");
    let dir = env.repo_dir("org/m-GGUF");
    assert_eq!(
        path,
        dir.join("snapshots")
            .join(&repo.commit)
            .join("m-Q4_K_M.gguf")
    );
    assert_eq!(std::fs::read(&path).unwrap(), want.content);
    assert_eq!(
        std::fs::read_link(&path).unwrap().to_str().unwrap(),
        format!("../../blobs/{}", want.sha256())
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        repo.commit
    );
    let other = repo.file("m-Q8_0.gguf").sha256();
    assert!(
        hub.cdn.requests(&format!("/cdn/{other}")).is_empty(),
        "Q8_0 was fetched"
    );
    assert!(
        hub.server.requests("/api/models/org/m-GGUF/tree").len() >= 3,
        "the tree listing is paginated and all pages are read"
    );
}

#[test]
fn split_gguf_is_fetched_whole_and_the_first_shard_is_the_model() {
    let repo = gguf_repo();
    let hub = FakeHub::start(vec![repo.clone()]);
    let env = env_for(&hub);
    let path = env.run(&["pull", "org/m-GGUF:Q6_K"]).path();
    assert!(path.ends_with("big-Q6_K-00001-of-00002.gguf"), "{path:?}");
    let second = path.with_file_name("big-Q6_K-00002-of-00002.gguf");
    assert_eq!(
        std::fs::read(second).unwrap(),
        repo.file("big-Q6_K-00002-of-00002.gguf").content
    );
}

#[test]
fn sharded_safetensors_repo_is_pulled_with_its_config_and_tokenizer() {
    let index = r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    let repo = Repo::new(
        "org/st",
        vec![
            File::small("config.json", r#"{"architectures":["LlamaForCausalLM"]}"#),
            File::small("model.safetensors.index.json", index),
            File::lfs("model-00001-of-00002.safetensors", bytes(120_000, 5)),
            File::lfs("model-00002-of-00002.safetensors", bytes(80_000, 6)),
            File::small("tokenizer.json", "{}"),
            File::small("README.md", "# st\n"),
            File::lfs("onnx/model.onnx", bytes(10_000, 7)),
        ],
    );
    let hub = FakeHub::start(vec![repo.clone()]);
    let env = env_for(&hub);
    let snapshot = env.run(&["pull", "org/st"]).path();
    assert_eq!(
        snapshot,
        env.repo_dir("org/st").join("snapshots").join(&repo.commit)
    );
    let mut got: Vec<String> = files_under(&snapshot)
        .iter()
        .map(|p| {
            p.strip_prefix(&snapshot)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    for name in &got {
        assert_eq!(
            std::fs::read(snapshot.join(name)).unwrap(),
            repo.file(name).content,
            "{name}"
        );
    }
    // Small files are named by their git blob id, as huggingface_hub names them.
    let config = repo.file("config.json");
    assert!(env
        .repo_dir("org/st")
        .join("blobs")
        .join(config.git_oid())
        .is_file());
}

#[test]
fn dropped_connection_resumes_without_refetching_what_arrived() {
    let repo = Repo::new("org/big", vec![File::lfs("w-Q8_0.gguf", bytes(2 * MIB, 8))]);
    let file = repo.file("w-Q8_0.gguf").clone();
    let hub = FakeHub::start(vec![repo]);
    hub.fault(&file.sha256(), Fault::Cut(1_200_000));
    let env = env_for(&hub);
    let path = env.run(&["pull", "org/big:Q8_0"]).path();
    assert_eq!(std::fs::read(path).unwrap(), file.content);
    let gets = hub.cdn.requests(&format!("/cdn/{}", file.sha256()));
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].sent, 1_200_000);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1200000-"));
    let total: usize = gets.iter().map(|g| g.sent).sum();
    let again = total - file.content.len();
    assert!(
        again * 10 < file.content.len(),
        "re-downloaded {again} bytes"
    );
}

#[test]
fn killed_pull_resumes_from_the_partial_file() {
    let repo = Repo::new("org/big", vec![File::lfs("w-Q8_0.gguf", bytes(2 * MIB, 9))]);
    let file = repo.file("w-Q8_0.gguf").clone();
    let hub = FakeHub::start(vec![repo]);
    hub.fault(
        &file.sha256(),
        Fault::Stall(1_000_000, Duration::from_secs(30)),
    );
    let env = env_for(&hub);
    let partial = env
        .repo_dir("org/big")
        .join("blobs")
        .join(format!("{}.incomplete", file.sha256()));
    let mut child = env
        .command(&["pull", "org/big:Q8_0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 1_000_000 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "partial never grew"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(files_under(&env.repo_dir("org/big").join("snapshots")).is_empty());
    let path = env.run(&["pull", "org/big:Q8_0"]).path();
    assert_eq!(std::fs::read(path).unwrap(), file.content);
    let gets = hub.cdn.requests(&format!("/cdn/{}", file.sha256()));
    let resumed = gets
        .iter()
        .find(|g| g.range.is_some())
        .expect("a ranged GET");
    assert_eq!(resumed.range.as_deref(), Some("bytes=1000000-"));
    assert_eq!(resumed.sent, file.content.len() - 1_000_000);
}

#[test]
fn checksum_mismatch_leaves_no_file_in_the_snapshot() {
    let repo = Repo::new(
        "org/bad",
        vec![File::lfs("w-Q4_0.gguf", bytes(100_000, 10))],
    );
    let file = repo.file("w-Q4_0.gguf").clone();
    let hub = FakeHub::start(vec![repo]);
    hub.fault(&file.sha256(), Fault::Corrupt(bytes(100_000, 11)));
    let env = env_for(&hub);
    let err = env.run(&["pull", "org/bad:Q4_0"]).failure(1).to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains(&file.sha256()),
        "{err}"
    );
    let left: Vec<_> = files_under(&env.repo_dir("org/bad"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/refs/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn gated_repo_says_how_to_set_a_token_and_works_with_one() {
    let mut repo = Repo::new("org/gated", vec![File::lfs("g-Q4_0.gguf", bytes(1000, 12))]);
    repo.gated = true;
    let hub = FakeHub::start(vec![repo]);
    let mut env = env_for(&hub);
    let err = env.run(&["pull", "org/gated:Q4_0"]).failure(1).to_string();
    assert!(
        err.contains("gated or private") && err.contains("HF_TOKEN"),
        "{err}"
    );
    assert!(err.contains("no token was sent"), "{err}");
    env.set("HF_TOKEN", "hf_secret");
    env.run(&["pull", "org/gated:Q4_0"]).path();
    let auth: Vec<_> = hub
        .server
        .log()
        .into_iter()
        .filter_map(|l| l.authorization)
        .collect();
    assert!(auth.iter().all(|a| a == "Bearer hf_secret") && !auth.is_empty());
    let cdn = hub.cdn.log();
    assert!(
        cdn.iter().all(|l| l.authorization.is_none()),
        "token leaked to the CDN host"
    );
}

#[test]
fn token_file_in_hf_home_is_used() {
    let mut repo = Repo::new("org/gated", vec![File::lfs("g-Q4_0.gguf", bytes(1000, 13))]);
    repo.gated = true;
    let hub = FakeHub::start(vec![repo]);
    let env = env_for(&hub);
    std::fs::create_dir_all(env.dir.path().join("hf")).unwrap();
    std::fs::write(env.dir.path().join("hf/token"), "hf_secret\n").unwrap();
    env.run(&["pull", "org/gated:Q4_0"]).path();
}

#[test]
fn unknown_file_or_tag_lists_the_repos_gguf_files_and_unknown_repo_is_not_found() {
    let hub = FakeHub::start(vec![gguf_repo()]);
    let env = env_for(&hub);
    for arg in ["org/m-GGUF:Q5_K_S", "org/m-GGUF/m-Q2_K.gguf"] {
        let err = env.run(&["pull", arg]).failure(1).to_string();
        assert!(
            err.contains("m-Q4_K_M.gguf")
                && err.contains("m-Q8_0.gguf")
                && err.contains("big-Q6_K-00001-of-00002.gguf"),
            "{arg}: {err}"
        );
    }
    let err = env.run(&["pull", "org/nope"]).failure(1).to_string();
    assert!(err.contains("'org/nope' not found"), "{err}");
    let err = env
        .run(&["pull", "org/m-GGUF", "--revision", "v9"])
        .failure(1)
        .to_string();
    assert!(err.contains("revision 'v9' not found"), "{err}");
}

#[test]
fn no_network_suggests_offline_and_offline_uses_only_the_cache() {
    let repo = gguf_repo();
    let hub = FakeHub::start(vec![repo.clone()]);
    let mut env = env_for(&hub);
    let cached = env.run(&["pull", "org/m-GGUF:Q4_K_M"]).path();
    env.set("HF_ENDPOINT", &support::server::dead_url());
    let err = env.run(&["pull", "org/m-GGUF:Q8_0"]).failure(1).to_string();
    assert!(
        err.contains("cannot reach") && err.contains("--offline"),
        "{err}"
    );
    assert_eq!(
        env.run(&["pull", "--offline", "org/m-GGUF:Q4_K_M"]).path(),
        cached
    );
    let err = env
        .run(&["pull", "--offline", "org/m-GGUF:Q8_0"])
        .failure(1)
        .to_string();
    assert!(
        err.contains("not in the cache") && err.contains("offline"),
        "{err}"
    );
    env.set("HF_HUB_OFFLINE", "1");
    assert_eq!(env.run(&["pull", "org/m-GGUF:Q4_K_M"]).path(), cached);
}

#[test]
fn second_pull_downloads_nothing() {
    let repo = gguf_repo();
    let hub = FakeHub::start(vec![repo]);
    let env = env_for(&hub);
    let first = env.run(&["pull", "org/m-GGUF:Q4_K_M"]).path();
    let before = hub.server.log().len();
    let out = env.run(&["pull", "org/m-GGUF:Q4_K_M"]);
    assert_eq!(out.path(), first);
    assert!(out.stderr.contains("up to date"), "{}", out.stderr);
    let after: Vec<_> = hub.server.log().into_iter().skip(before).collect();
    assert!(
        after.iter().all(|l| l.path.starts_with("/api/")),
        "only metadata requests on a second pull: {after:?}"
    );
}
