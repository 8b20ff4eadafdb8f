//! What this machine offers a model: total and available RAM (Linux `/proc/meminfo`), and GPU
//! memory when the build has a GPU backend (`nvidia-smi` for CUDA; Metal GPUs share RAM).

use std::process::Command;

use serde::Serialize;

use crate::device;

/// Memory of this machine, as far as it can be known.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    /// Installed RAM in bytes (null where it cannot be read).
    pub ram_total: Option<u64>,
    /// RAM available now in bytes (null where it cannot be read).
    pub ram_available: Option<u64>,
    /// GPU memory of the first GPU in bytes (null without a GPU backend or a readable GPU).
    pub gpu_total: Option<u64>,
    /// Why the GPU figure is what it is (`no GPU backend in this build`, `cuda:0 via nvidia-smi`).
    pub gpu_note: String,
}

impl Machine {
    /// Reads this machine's figures.
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_total = meminfo_bytes(&meminfo, "MemTotal");
        let backends = device::compiled_backends();
        let (gpu_total, gpu_note) = if backends.contains("cuda") {
            match nvidia_smi_total() {
                Some(b) => (Some(b), "cuda:0, from nvidia-smi".to_string()),
                None => (
                    None,
                    "cuda build, but nvidia-smi did not report a GPU".to_string(),
                ),
            }
        } else if backends.contains("metal") {
            (ram_total, "Metal GPUs share the machine's RAM".to_string())
        } else {
            (None, "no GPU backend in this build (cpu only)".to_string())
        };
        Self {
            ram_total,
            ram_available: meminfo_bytes(&meminfo, "MemAvailable"),
            gpu_total,
            gpu_note,
        }
    }
}

/// A `Key:  N kB` line of `/proc/meminfo`, in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// Total memory of GPU 0 from `nvidia-smi` (MiB in its CSV output).
fn nvidia_smi_total() -> Option<u64> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

fn parse_nvidia_smi(text: &str) -> Option<u64> {
    let mib: u64 = text.lines().next()?.trim().parse().ok()?;
    mib.checked_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_are_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(24_576_000 * 1024));
        assert_eq!(meminfo_bytes(text, "MemAvailable"), Some(20_000_000 * 1024));
        assert_eq!(meminfo_bytes(text, "SwapTotal"), None);
    }

    #[test]
    fn nvidia_smi_reports_mib_of_the_first_gpu() {
        assert_eq!(parse_nvidia_smi("81559\n81559\n"), Some(81559 << 20));
        assert_eq!(parse_nvidia_smi("No devices were found\n"), None);
    }
}
