//! The reproducibility record carried by JSON reports: what was built (version, commit,
//! features, candle version), where it ran (CPU model, SIMD features detected and compiled in,
//! GPU), and what was measured (each model's size, parameter count, quantization mix, and the
//! sha256 prefix of its file).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::memory::GpuInfo;
use crate::formats::ggml_types;
use crate::formats::gguf_header::Header;
use crate::{Error, Result};

/// Hex digits of the sha256 kept in reports: enough to tell files apart.
pub const SHA256_PREFIX_LEN: usize = 16;

/// Build and machine facts of one bench run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// mlcli's version.
    pub mlcli_version: String,
    /// The git commit built from ("unknown" outside a checkout).
    pub git_commit: String,
    /// Cargo features compiled in (`cuda`, `metal`).
    pub features: Vec<String>,
    /// The candle version linked.
    pub candle_version: String,
    /// Operating system and CPU architecture, e.g. `linux x86_64`.
    pub os: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs visible to the process.
    pub cpu_count: usize,
    /// SIMD extensions the CPU offers (detected at run time).
    pub cpu_features: Vec<String>,
    /// SIMD extensions the binary was compiled for (kernels chosen at run time, by candle and
    /// by mlcli, may use more).
    pub simd_in_use: Vec<String>,
    /// GPU name and driver, when a GPU device was used.
    pub gpu: Option<GpuInfo>,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The models measured.
    pub models: Vec<ModelRecord>,
}

/// One tensor type of a model's quantization mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantShare {
    /// ggml type name, e.g. `Q4_K`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Tensors of this type.
    pub tensors: usize,
    /// Bytes of this type.
    pub bytes: u64,
}

/// What identifies a measured model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Display name (`general.name`, or the file name).
    pub name: String,
    /// The file, or `synthetic:PRESET`.
    pub file: String,
    /// The family that ran it.
    pub family: String,
    /// The first [`SHA256_PREFIX_LEN`] hex digits of the file's sha256 (none for synthetic).
    pub sha256_prefix: Option<String>,
    /// Bytes of tensor data.
    pub size_bytes: u64,
    /// Parameters (elements of all tensors).
    pub n_params: u64,
    /// Tensor types by bytes, largest first.
    pub quant_mix: Vec<QuantShare>,
    /// Bytes of weights one generated token reads ([`super::bandwidth::weights_per_token`]).
    #[serde(default)]
    pub weights_per_token: u64,
}

/// Size, parameter count and quantization mix of the tensors a header lists.
pub fn weights_summary(header: &Header) -> (u64, u64, Vec<QuantShare>) {
    let (mut size, mut params) = (0u64, 0u64);
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in &header.tensors {
        let elements: u64 = t.dims.iter().product();
        let bytes = header.tensor_bytes(t).unwrap_or(0);
        size += bytes;
        params += elements;
        let e = by_type.entry(ggml_types::name_of(t.type_id)).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
    let mut mix: Vec<QuantShare> = by_type
        .into_iter()
        .map(|(ty, (tensors, bytes))| QuantShare { ty, tensors, bytes })
        .collect();
    mix.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(&b.ty)));
    (size, params, mix)
}

/// The quantization mix in one line, e.g. `Q4_K 80%, Q6_K 20%` (by bytes; shares under 1%
/// are left out).
pub fn mix_label(mix: &[QuantShare]) -> String {
    let total: u64 = mix.iter().map(|q| q.bytes).sum::<u64>().max(1);
    let parts: Vec<String> = mix
        .iter()
        .filter(|q| q.bytes * 100 >= total)
        .map(|q| format!("{} {:.0}%", q.ty, q.bytes as f64 * 100.0 / total as f64))
        .collect();
    parts.join(", ")
}

/// The first [`SHA256_PREFIX_LEN`] hex digits of the sha256 of the file at `path`.
pub fn sha256_prefix(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex[..SHA256_PREFIX_LEN].to_string())
}

/// Build and machine facts (models and GPU are filled in by the caller).
pub fn machine_record() -> Record {
    let features = [
        ("cuda", cfg!(feature = "cuda")),
        ("metal", cfg!(feature = "metal")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(f, _)| f.to_string())
    .collect();
    Record {
        mlcli_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: option_env!("MLCLI_GIT_COMMIT").unwrap_or("unknown").into(),
        features,
        candle_version: option_env!("MLCLI_CANDLE_VERSION")
            .unwrap_or("unknown")
            .into(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        cpu_model: cpu_model().unwrap_or_else(|| "unknown".into()),
        cpu_count: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_features: cpu_features(),
        simd_in_use: simd_in_use(),
        gpu: None,
        started_at: rfc3339_now(),
        models: Vec::new(),
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// SIMD extensions of this CPU that matter to tensor kernels, detected at run time.
fn cpu_features() -> Vec<String> {
    let mut out: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => { $( if std::is_x86_feature_detected!($f) { out.push($f); } )* };
        }
        detect!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { out.push($f); } )* };
        }
        detect!("neon", "fp16", "dotprod", "i8mm", "bf16", "sve");
    }
    out.into_iter().map(String::from).collect()
}

/// SIMD extensions this binary was compiled for. Kernels selected at run time (candle's AVX2 and
/// AVX-512 quantized kernels, mlcli's Q4_1 kernel) are not listed here.
fn simd_in_use() -> Vec<String> {
    let compiled = [
        ("sse4.2", cfg!(target_feature = "sse4.2")),
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("neon", cfg!(target_feature = "neon")),
        ("simd128", cfg!(target_feature = "simd128")),
    ];
    compiled
        .iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f.to_string())
        .collect()
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf_header::TensorEntry;

    #[test]
    fn epoch_seconds_format_as_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn quant_mix_counts_tensors_and_bytes_per_type() {
        let entry = |name: &str, dims: Vec<u64>, type_id| TensorEntry {
            name: name.into(),
            dims,
            type_id,
            offset: 0,
        };
        let header = Header {
            version: 3,
            metadata: vec![],
            tensors: vec![
                entry("a", vec![256, 4], 12),
                entry("b", vec![256, 2], 12),
                entry("c", vec![64], 0),
            ],
            alignment: 32,
            data_offset: 0,
            file_size: 0,
        };
        let (size, params, mix) = weights_summary(&header);
        assert_eq!(params, 256 * 6 + 64);
        assert_eq!(size, 6 * 144 + 64 * 4);
        assert_eq!(mix[0].ty, "Q4_K");
        assert_eq!((mix[0].tensors, mix[0].bytes), (2, 864));
        assert_eq!((mix[1].ty.as_str(), mix[1].bytes), ("F32", 256));
        assert_eq!(mix_label(&mix), "Q4_K 77%, F32 23%");
    }

    #[test]
    fn the_record_names_this_build() {
        let r = machine_record();
        assert_eq!(r.mlcli_version, env!("CARGO_PKG_VERSION"));
        assert!(r.candle_version.starts_with("0."), "{}", r.candle_version);
        assert!(r.cpu_count >= 1);
    }
}
