//! Build script: records the git commit and the candle version the binary is built from, for
//! the reproducibility record of `mlcli bench` (`MLCLI_GIT_COMMIT`, `MLCLI_CANDLE_VERSION`;
//! "unknown" when git or the lock file is not available, e.g. when built from a crate tarball),
//! and, with the `cuda` feature, compiles `src/kernels/cuda/kernels.cu` to PTX with `nvcc` for
//! `CUDA_COMPUTE_CAP` (default 80; the driver JIT-compiles PTX for newer GPUs).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The version of `name` in `Cargo.lock`.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let len = lock[start..].find('"')?;
    Some(lock[start..start + len].to_string())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLCLI_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"]),
    ) {
        println!("cargo:rerun-if-changed={common}/{head_ref}");
        println!("cargo:rerun-if-changed={common}/packed-refs");
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock_path = Path::new(&manifest).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let candle = std::fs::read_to_string(&lock_path)
        .ok()
        .and_then(|lock| locked_version(&lock, "candle-core"))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLCLI_CANDLE_VERSION={candle}");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_kernels();
    }
}

/// `nvcc --ptx` of our CUDA kernels into `$OUT_DIR/mlcli_kernels.ptx`.
fn build_kernels() {
    let src = "src/kernels/cuda/kernels.cu";
    // The directory: kernels.cu includes its parts (*.cuh) from there.
    println!("cargo:rerun-if-changed=src/kernels/cuda");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or_else(|| "80".into());
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("mlcli_kernels.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on {src} ({s})"),
        Err(e) => panic!("cannot run {nvcc} for {src} (is the CUDA toolkit on PATH?): {e}"),
    }
}
