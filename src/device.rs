//! Device selection: `auto`, `cpu`, `cuda[:N]`, `metal[:N]`, with the reason for the choice.
//! The only place (with layer code needing fused kernels) where backend features are tested.

use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Request {
    /// The best compiled-in accelerator that works, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
    /// An Apple GPU by ordinal.
    Metal(usize),
}

impl FromStr for Request {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, ordinal) = match s.split_once(':') {
            Some((n, o)) => {
                let o = o
                    .parse::<usize>()
                    .map_err(|_| format!("bad device ordinal '{o}' in '{s}'"))?;
                (n, Some(o))
            }
            None => (s, None),
        };
        match (name, ordinal) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("cuda", o) => Ok(Self::Cuda(o.unwrap_or(0))),
            ("metal", o) => Ok(Self::Metal(o.unwrap_or(0))),
            _ => Err(format!(
                "unknown device '{s}'; expected auto, cpu, cuda[:N] or metal[:N]"
            )),
        }
    }
}

/// The device chosen and why.
#[derive(Debug)]
pub struct Selected {
    /// The device.
    pub device: Device,
    /// A one-line explanation (printed under `-v`).
    pub reason: String,
}

/// Names the compiled-in backends, e.g. `cpu, cuda`.
pub fn compiled_backends() -> &'static str {
    if cfg!(feature = "cuda") && cfg!(feature = "metal") {
        "cpu, cuda, metal"
    } else if cfg!(feature = "cuda") {
        "cpu, cuda"
    } else if cfg!(feature = "metal") {
        "cpu, metal"
    } else {
        "cpu"
    }
}

/// A short label for a device (`cpu`, `cuda:0`, `metal:0`).
pub fn label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn cpu(reason: String) -> Selected {
    Selected {
        device: Device::Cpu,
        reason,
    }
}

#[cfg(feature = "cuda")]
fn try_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn try_cuda(_ordinal: usize) -> std::result::Result<Device, String> {
    Err("cuda not compiled in (build with --features cuda)".into())
}

#[cfg(feature = "metal")]
fn try_metal(ordinal: usize) -> std::result::Result<Device, String> {
    Device::new_metal(ordinal).map_err(|e| e.to_string())
}

#[cfg(not(feature = "metal"))]
fn try_metal(_ordinal: usize) -> std::result::Result<Device, String> {
    Err("metal not compiled in (build with --features metal)".into())
}

/// Resolves a request to a device.
pub fn select(request: Request) -> Result<Selected> {
    match request {
        Request::Cpu => Ok(cpu("cpu: requested".into())),
        Request::Cuda(i) => try_cuda(i)
            .map(|device| Selected {
                device,
                reason: format!("cuda:{i}: requested"),
            })
            .map_err(|e| Error::Device(format!("cuda:{i} is not usable: {e}"))),
        Request::Metal(i) => try_metal(i)
            .map(|device| Selected {
                device,
                reason: format!("metal:{i}: requested"),
            })
            .map_err(|e| Error::Device(format!("metal:{i} is not usable: {e}"))),
        Request::Auto => {
            let cuda = match try_cuda(0) {
                Ok(device) => {
                    return Ok(Selected {
                        device,
                        reason: "cuda:0: compiled in and a GPU was found".into(),
                    })
                }
                Err(e) => e,
            };
            let metal = match try_metal(0) {
                Ok(device) => {
                    return Ok(Selected {
                        device,
                        reason: "metal:0: compiled in and a GPU was found".into(),
                    })
                }
                Err(e) => e,
            };
            // Metal only exists on Apple machines; elsewhere it is not worth a mention.
            let why = if cfg!(target_os = "macos") {
                format!("{cuda}; {metal}")
            } else {
                cuda
            };
            Ok(cpu(format!("cpu: {why}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse() {
        assert_eq!("auto".parse(), Ok(Request::Auto));
        assert_eq!("cuda".parse(), Ok(Request::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(Request::Cuda(1)));
        assert_eq!("metal".parse(), Ok(Request::Metal(0)));
        assert!("tpu".parse::<Request>().is_err());
        assert!("cuda:x".parse::<Request>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn auto_without_accelerators_explains_the_cpu_choice() {
        let s = select(Request::Auto).unwrap();
        assert!(s.device.is_cpu());
        assert!(s.reason.contains("cuda not compiled in"), "{}", s.reason);
        assert!(select(Request::Cuda(0)).is_err());
    }
}
