//! The HF cache is shared with Python: files pulled by mlcli are found by `huggingface_hub`'s
//! `try_to_load_from_cache`, and a file downloaded by `huggingface_hub` (from the same fake
//! Hub) is found by `mlcli pull --offline`. Needs `python3 -m pip install huggingface_hub`;
//! without it the test is skipped, unless `MLCLI_REQUIRE_HF_HUB` is set (as `.ci/run` does).

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::hub::{bytes, FakeHub, File, Repo};
use support::Env;

fn python_has_huggingface_hub() -> bool {
    Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn cache_is_shared_with_python_huggingface_hub() {
    if !python_has_huggingface_hub() {
        assert!(
            std::env::var_os("MLCLI_REQUIRE_HF_HUB").is_none(),
            "MLCLI_REQUIRE_HF_HUB is set but python3 cannot import huggingface_hub: python3 -m pip install huggingface_hub"
        );
        eprintln!("skipped: python3 cannot import huggingface_hub");
        return;
    }
    let repo = Repo::new(
        "org/shared-GGUF",
        vec![
            File::lfs("shared-Q4_K_M.gguf", bytes(70_000, 31)),
            File::lfs("shared-Q8_0.gguf", bytes(90_000, 32)),
            File::small("config.json", "{\"a\": 1}\n"),
        ],
    );
    let hub = FakeHub::start(vec![repo.clone()]);
    let mut env = Env::new();
    env.set("HF_ENDPOINT", hub.url());
    env.run(&["pull", "org/shared-GGUF:Q4_K_M"]).path();
    env.run(&["pull", "org/shared-GGUF/config.json"]).path();

    let check: Vec<_> = ["shared-Q4_K_M.gguf", "config.json"]
        .iter()
        .map(|f| serde_json::json!({"repo": repo.id, "file": f, "sha256": repo.file(f).sha256()}))
        .collect();
    let spec = serde_json::json!({
        "check": check,
        "download": {"repo": repo.id, "file": "shared-Q8_0.gguf"},
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/hf_cache_interop.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(spec.to_string())
        .env("HF_HUB_CACHE", env.hub_cache())
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python: {stderr}");
    let from_python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(from_python.starts_with(env.hub_cache()), "{from_python:?}");

    env.set("HF_ENDPOINT", &support::server::dead_url());
    let found = env
        .run(&["pull", "--offline", "org/shared-GGUF:Q8_0"])
        .path();
    assert_eq!(found, from_python);
    assert_eq!(
        std::fs::read(found).unwrap(),
        repo.file("shared-Q8_0.gguf").content
    );
}
