//! Hostile input (issue #17): chat templates that loop or double without end, files that say
//! escape sequences or megabytes where a name belongs, misaligned tensors, invalid UTF-8 on
//! stdin, and stdout closed under us. Each ends in one clean line and the promised exit status,
//! quickly: the real binary runs on tiny generated models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use mlcli::formats::gguf_builder::{array, Builder};
use mlcli::formats::gguf_header::{parse_bytes, ReadOptions, Value, ValueType};
use mlcli::models::{llama, testing};

fn mlcli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mlcli runs")
}

/// Exit status 2, nothing on stdout, one line on stderr holding every needle and no escape.
fn assert_clean_failure(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains('\x1b'), "raw escape: {stderr:?}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' missing from: {stderr}");
    }
    stderr
}

/// The tiny llama GGUF rebuilt with `meta` set (replacing keys it has, appending others).
fn tiny_gguf_with(meta: Vec<(&str, Value)>) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    testing::write_tiny_gguf(&llama::SPEC, &p, 1, GgmlDType::F32, None).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let h = parse_bytes(&bytes, bytes.len() as u64, ReadOptions::FULL).unwrap();
    let mut b = Builder::new();
    for (k, v) in &h.metadata {
        match meta.iter().find(|(key, _)| key == k) {
            Some((_, new)) => b = b.meta(k, new.clone()),
            None => b = b.meta(k, v.clone()),
        }
    }
    for (k, v) in &meta {
        if h.get(k).is_none() {
            b = b.meta(k, v.clone());
        }
    }
    for t in &h.tensors {
        let (start, len) = h.extent(t).unwrap();
        let data = bytes[start as usize..(start + len) as usize].to_vec();
        b = b.tensor(&t.name, &t.dims, t.type_id, data);
    }
    b.to_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Templates that would run for hours or allocate gigabytes without the bounds.
const NESTED_LOOPS: &str = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
const STRING_DOUBLING: &str = "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
const STRAIGHT_DOUBLING: &str = "{% set s = 'x' * 50000000 %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s|length }}";
const LIST_DOUBLING: &str = "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|join(',')|length }}";
const OUTPUT_FLOOD: &str =
    "{% for a in range(100000) %}{{ messages[0]['content'] * 1000 }}{% endfor %}";
const WIDE_INDENT: &str = "{{ 'a\nb'|indent(10000000000) }}";
/// Found by fuzzing: one repetition of 90 MB, past the fuzz target's memory budget.
const BIG_REPEAT: &str = "{ {(\"A*{{ 'k*][[1%*'*000010000000}}";

/// Found by fuzzing: minijinja folds constant expressions while compiling, so this asks for
/// 9 GB before any render (it aborted `mlcli run` and `inspect`).
fn folded_constant() -> String {
    let big = "('x' * 99999999)";
    format!("{{{{ {} }}}}", vec![big; 90].join(" ~ "))
}

#[test]
fn hostile_user_templates_stop_with_a_clean_error() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &tiny_gguf_with(vec![]));
    for (name, source, needle) in [
        ("loops.jinja", NESTED_LOOPS, "instructions"),
        ("double.jinja", STRING_DOUBLING, "memory"),
        ("straight.jinja", STRAIGHT_DOUBLING, "memory"),
        ("list.jinja", LIST_DOUBLING, "was stopped"),
        ("flood.jinja", OUTPUT_FLOOD, "wrote more than"),
        ("indent.jinja", WIDE_INDENT, "indent width"),
        ("repeat.jinja", BIG_REPEAT, "wrote more than"),
    ] {
        let t = write(d.path(), name, source.as_bytes());
        let start = Instant::now();
        let out = mlcli(&[
            "run",
            "-n",
            "1",
            "--chat-template",
            t.to_str().unwrap(),
            model.to_str().unwrap(),
            "hi",
        ]);
        let elapsed = start.elapsed();
        let stderr = assert_clean_failure(&out, &[needle, "--chat-template template was stopped"]);
        assert!(!stderr.contains("replaces it"), "{stderr}");
        assert!(elapsed < Duration::from_secs(30), "{name}: {elapsed:?}");
        assert!(!stderr.contains("memory allocation"), "{stderr}");
    }
}

#[test]
fn a_template_that_folds_into_gigabytes_is_stopped_while_compiling() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &tiny_gguf_with(vec![]));
    let t = write(d.path(), "folded.jinja", folded_constant().as_bytes());
    let stderr = assert_clean_failure(
        &mlcli(&[
            "run",
            "--chat-template",
            t.to_str().unwrap(),
            model.to_str().unwrap(),
            "hi",
        ]),
        &["folded.jinja", "memory while compiling"],
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    let evil = write(
        d.path(),
        "folded.gguf",
        &tiny_gguf_with(vec![(
            "tokenizer.chat_template",
            Value::Str(folded_constant()),
        )]),
    );
    let m = evil.to_str().unwrap();
    assert_clean_failure(
        &mlcli(&["inspect", "--template", m]),
        &["the model's chat template", "memory while compiling"],
    );
    assert_clean_failure(
        &mlcli(&["run", m, "hi"]),
        &["chat template was stopped", "memory while compiling"],
    );
}

#[test]
fn a_user_template_that_does_not_compile_is_named() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &tiny_gguf_with(vec![]));
    let t = write(d.path(), "broken.jinja", b"{% for x in %}\x1b[2J");
    assert_clean_failure(
        &mlcli(&[
            "run",
            "--chat-template",
            t.to_str().unwrap(),
            model.to_str().unwrap(),
            "hi",
        ]),
        &[
            "the chat template",
            "broken.jinja",
            "does not compile at line 1",
        ],
    );
}

#[test]
fn hostile_model_template_stops_run_and_inspect() {
    let d = tempfile::tempdir().unwrap();
    let model = write(
        d.path(),
        "m.gguf",
        &tiny_gguf_with(vec![(
            "tokenizer.chat_template",
            Value::Str(STRING_DOUBLING.into()),
        )]),
    );
    let m = model.to_str().unwrap();
    assert_clean_failure(
        &mlcli(&["run", "-n", "1", m, "hi"]),
        &["chat template was stopped", "memory"],
    );
    assert_clean_failure(
        &mlcli(&["inspect", "--template", m]),
        &["the model's chat template", "was stopped"],
    );
}

#[test]
fn misaligned_tensor_is_refused_naming_tensor_offset_and_alignment() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = tiny_gguf_with(vec![]);
    let h = parse_bytes(&bytes, bytes.len() as u64, ReadOptions::PREVIEW).unwrap();
    let first = &h.tensors[0];
    assert_eq!(first.offset, 0);
    // The entry ends with the offset (u64); it follows the name, rank, dims and type.
    let name_at = bytes
        .windows(first.name.len() + 8)
        .position(|w| {
            w[..8] == (first.name.len() as u64).to_le_bytes() && &w[8..] == first.name.as_bytes()
        })
        .unwrap();
    let offset_at = name_at + 8 + first.name.len() + 4 + 8 * first.dims.len() + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    let model = write(d.path(), "misaligned.gguf", &bytes);
    let needles = [first.name.as_str(), "offset 4", "alignment 32"];
    let m = model.to_str().unwrap();
    assert_clean_failure(&mlcli(&["run", "-n", "1", m, "hi"]), &needles);
    // inspect's verdict agrees with run.
    let out = mlcli(&["inspect", "--json", m]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let support = &summary["summary"]["support"];
    assert_eq!(support["runnable"], false, "{support}");
    assert!(support.to_string().contains("alignment 32"), "{support}");
}

#[test]
fn escape_sequences_and_megabyte_names_from_files_are_escaped_and_cut() {
    let d = tempfile::tempdir().unwrap();
    let arch = format!("\x1b]0;pwned\x07\x1b[2J{}", "A".repeat(4 << 20));
    let model = write(
        d.path(),
        "evil.gguf",
        &tiny_gguf_with(vec![("general.architecture", Value::Str(arch))]),
    );
    let stderr = assert_clean_failure(
        &mlcli(&["run", "-n", "1", model.to_str().unwrap(), "hi"]),
        &["unsupported architecture", "\\u{1b}"],
    );
    assert!(stderr.len() < 8192, "{} bytes", stderr.len());
}

#[test]
fn inspect_shows_file_strings_escaped() {
    let d = tempfile::tempdir().unwrap();
    let model = write(
        d.path(),
        "evil.gguf",
        &tiny_gguf_with(vec![(
            "general.name",
            Value::Str("bad\x1b[31mname\r".into()),
        )]),
    );
    let m = model.to_str().unwrap();
    for view in [&["inspect", m][..], &["inspect", "--metadata", m][..]] {
        let out = mlcli(view);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains('\x1b') && !stdout.contains('\r'),
            "{stdout:?}"
        );
        assert!(
            stdout.contains("bad\\u{1b}[31mname") || stdout.contains("bad\\u001b[31mname"),
            "{stdout}"
        );
    }
}

#[test]
fn invalid_utf8_on_stdin_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &tiny_gguf_with(vec![]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["run", "-n", "1", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"caf\xe9 \xff\xfe")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_clean_failure(&out, &["stdin", "UTF-8"]);
}

#[test]
fn closed_stdout_is_success_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &tiny_gguf_with(vec![]));
    let m = model.to_str().unwrap();
    for args in [
        &["list", "--aliases"][..],
        &["list", "--aliases", "--json"][..],
        &["completions", "bash"][..],
        &["pull", m][..],
        &["pull", "--json", m][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_large_metadata_array_is_not_kept_when_loading() {
    let items = vec![Value::U8(7); 1 << 20];
    let bytes = tiny_gguf_with(vec![("evil.blob", array(ValueType::U8, items))]);
    let h = parse_bytes(&bytes, bytes.len() as u64, ReadOptions::LOAD).unwrap();
    let blob = h.get("evil.blob").and_then(Value::as_array).unwrap();
    assert_eq!((blob.len, blob.items.len()), (1 << 20, 8));
    let tokens = h.get("tokenizer.ggml.tokens").and_then(Value::as_array);
    assert!(tokens.is_some_and(|t| t.is_complete()));
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "blob.gguf", &bytes);
    let g = mlcli::formats::gguf::Gguf::open(&model).unwrap();
    assert!(!g.content().metadata.contains_key("evil.blob"));
    assert!(g.content().metadata.contains_key("tokenizer.ggml.tokens"));
}

#[test]
fn tokenizer_array_of_the_wrong_type_is_refused_at_open() {
    let items = vec![Value::U8(1); 1 << 16];
    let bytes = tiny_gguf_with(vec![(
        "tokenizer.ggml.token_type",
        array(ValueType::U8, items),
    )]);
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.gguf", &bytes);
    assert_clean_failure(
        &mlcli(&["run", "-n", "1", model.to_str().unwrap(), "hi"]),
        &["tokenizer.ggml.token_type", "ARRAY[UINT8]"],
    );
}
