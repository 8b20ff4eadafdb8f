//! Memory figures: the process's peak resident set (Linux `VmHWM`, which can be reset between
//! tests), and GPU name, driver and this process's GPU memory from `nvidia-smi` when a CUDA
//! device is used. Elsewhere the figures are absent ("n/a"), never guessed.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The peak resident set size of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// The current resident set size of this process in bytes (`VmRSS`), where the OS reports it.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// Resets the peak resident set to the current one (Linux ≥ 4.0: writing `5` to
/// `/proc/self/clear_refs`); false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `KEY:   123 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// A GPU's identity as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuInfo {
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Driver version.
    pub driver: String,
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = Command::new("nvidia-smi").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Name and driver of CUDA GPU `ordinal`, from `nvidia-smi`.
pub fn cuda_gpu_info(ordinal: usize) -> Option<GpuInfo> {
    let out = nvidia_smi(&[
        "--query-gpu=name,driver_version",
        "--format=csv,noheader",
        &format!("--id={ordinal}"),
    ])?;
    parse_gpu_info(&out)
}

fn parse_gpu_info(csv: &str) -> Option<GpuInfo> {
    let (name, driver) = csv.lines().next()?.rsplit_once(',')?;
    Some(GpuInfo {
        name: name.trim().to_string(),
        driver: driver.trim().to_string(),
    })
}

/// GPU memory in bytes used by process `pid`, from `nvidia-smi --query-compute-apps`.
fn parse_process_gpu_mib(csv: &str, pid: u32) -> Option<u64> {
    csv.lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(p, _)| p.trim().parse() == Ok(pid))
        .filter_map(|(_, mib)| mib.trim().parse::<u64>().ok())
        .reduce(|a, b| a + b)
        .map(|mib| mib * 1024 * 1024)
}

/// Samples this process's GPU memory in the background and keeps the largest value seen.
pub struct GpuMemoryMonitor {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    seen: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GpuMemoryMonitor {
    /// Starts sampling every `period`.
    pub fn start(period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        let (s, p, n) = (stop.clone(), peak.clone(), seen.clone());
        let pid = std::process::id();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let used = nvidia_smi(&[
                    "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits",
                ])
                .and_then(|csv| parse_process_gpu_mib(&csv, pid));
                if let Some(bytes) = used {
                    p.fetch_max(bytes, Ordering::Relaxed);
                    n.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(period);
            }
        });
        Self {
            stop,
            peak,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak seen, if any sample succeeded.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen
            .load(Ordering::Relaxed)
            .then(|| self.peak.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tmlcli\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(123456));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_grows_with_touched_memory_and_resets() {
        let before = peak_rss_bytes().unwrap();
        let big = std::hint::black_box(vec![1u8; 256 << 20]);
        let during = peak_rss_bytes().unwrap();
        assert!(during >= before.max(250 << 20), "{before} -> {during}");
        drop(big);
        if reset_peak_rss() {
            assert!(peak_rss_bytes().unwrap() < during);
        }
    }

    #[test]
    fn nvidia_smi_output_is_parsed() {
        assert_eq!(
            parse_gpu_info("NVIDIA H100 80GB HBM3, 550.54.15\n"),
            Some(GpuInfo {
                name: "NVIDIA H100 80GB HBM3".into(),
                driver: "550.54.15".into()
            })
        );
        let apps = "4242, 1024\n17, 9000\n4242, 512\n";
        assert_eq!(parse_process_gpu_mib(apps, 4242), Some(1536 << 20));
        assert_eq!(parse_process_gpu_mib(apps, 5), None);
        assert_eq!(
            parse_process_gpu_mib("No running processes found\n", 5),
            None
        );
    }
}
