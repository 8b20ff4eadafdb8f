//! The feed-forward half of a fused block on the device: one gated MLP (its weights where they
//! lie), or routed experts (the f32 router, and a table of the experts' addresses for each
//! projection, which the kernels index with the ids the router chose on the device).

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::quantized::QTensor;

use super::kernels::{driver, MoeArgs};
use super::{type_id, upload, DevBuf, Weight, SUPPORTED};
use crate::kernels::Activation;
use crate::models::layers::moe::Router;
use crate::models::recipe::{self, Unsupported};
use crate::{Error, Result};

/// Most experts and experts per token the routing kernel holds.
const MAX_EXPERTS: usize = 1024;
const MAX_USED: usize = 32;

/// A block's feed-forward network on the device.
pub(super) enum Ffn {
    /// One gated MLP.
    Dense {
        gate: Weight,
        up: Weight,
        down: Weight,
    },
    /// Routed experts.
    Experts(Box<Experts>),
}

/// Routed experts on the device.
pub(super) struct Experts {
    pub(super) args: MoeArgs,
    _router: DevBuf<f32>,
    _tables: [DevBuf<u64>; 3],
    _keep: Vec<Arc<QTensor>>,
}

/// Whether the kernels run `ffn` of block `i`; why not if not.
pub(super) fn check(i: usize, ffn: &recipe::Ffn) -> std::result::Result<(), Unsupported> {
    let ok = |t: &Arc<QTensor>| type_id(t.dtype()).is_some();
    let width = ffn.width();
    if !width.is_multiple_of(32) {
        return Err(format!(
            "blk.{i}: feed-forward width {width} is not a multiple of 32"
        ));
    }
    match ffn {
        recipe::Ffn::Dense { gate, up, down } => {
            for (name, w) in [("ffn_gate", gate), ("ffn_up", up), ("ffn_down", down)] {
                if !ok(w) {
                    return Err(format!(
                        "blk.{i}.{name} is {:?}; the fused kernels take {SUPPORTED}",
                        w.dtype()
                    ));
                }
            }
            if gate.shape().dims2().ok() != up.shape().dims2().ok() {
                return Err("gate and up of different widths".into());
            }
        }
        recipe::Ffn::Experts(e) => {
            if e.gate.len() > MAX_EXPERTS || e.n_used > MAX_USED {
                return Err(format!(
                    "blk.{i}: {} experts with {} per token; the fused kernels take up to \
                     {MAX_EXPERTS} and {MAX_USED}",
                    e.gate.len(),
                    e.n_used
                ));
            }
            for (name, ws) in [
                ("ffn_gate_exps", &e.gate),
                ("ffn_up_exps", &e.up),
                ("ffn_down_exps", &e.down),
            ] {
                let first = ws.first().ok_or("a mixture of experts without experts")?;
                if let Some(w) = ws.iter().find(|w| !ok(w)) {
                    return Err(format!(
                        "blk.{i}.{name} is {:?}; the fused kernels take {SUPPORTED}",
                        w.dtype()
                    ));
                }
                if ws
                    .iter()
                    .any(|w| w.dtype() != first.dtype() || w.shape() != first.shape())
                {
                    return Err(format!(
                        "blk.{i}.{name}: experts of different types or shapes"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The device addresses of `ws`, uploaded as a table.
fn table(stream: &Arc<CudaStream>, ws: &[Arc<QTensor>]) -> Result<DevBuf<u64>> {
    let ptrs = ws
        .iter()
        .map(|w| w.device_ptr().map(|p| p as u64))
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    let mem = stream
        .clone_htod(&ptrs)
        .map_err(driver("uploading an expert table"))?;
    Ok(DevBuf::new(mem, stream))
}

fn type_of(w: &Arc<QTensor>, what: &str) -> Result<i32> {
    type_id(w.dtype()).map(|t| t.0).ok_or_else(|| {
        Error::Internal(format!(
            "{what} is {:?}; the fused kernels take {SUPPORTED}",
            w.dtype()
        ))
    })
}

impl Ffn {
    /// Puts block `i`'s network on the device (the weights are there already).
    pub(super) fn new(
        f: &recipe::Ffn,
        act: Activation,
        stream: &Arc<CudaStream>,
        i: usize,
    ) -> Result<Self> {
        let name = |s: &str| format!("blk.{i}.{s}");
        Ok(match f {
            recipe::Ffn::Dense { gate, up, down } => Self::Dense {
                gate: Weight::new(gate, &name("ffn_gate"))?,
                up: Weight::new(up, &name("ffn_up"))?,
                down: Weight::new(down, &name("ffn_down"))?,
            },
            recipe::Ffn::Experts(e) => {
                let first = |ws: &[Arc<QTensor>], what: &str| -> Result<i32> {
                    let w = ws.first().ok_or_else(|| {
                        Error::Internal(format!("{what}: a mixture of experts without experts"))
                    })?;
                    type_of(w, what)
                };
                let (mode, renorm) = match e.routing {
                    Router::SoftmaxTopK { renormalize } => (0, renormalize),
                    Router::TopKSoftmax => (1, false),
                };
                let router = DevBuf::new(upload(stream, &e.router.flatten_all()?)?, stream);
                let tables = [
                    table(stream, &e.gate)?,
                    table(stream, &e.up)?,
                    table(stream, &e.down)?,
                ];
                let args = MoeArgs {
                    router: router.ptr,
                    tables: (tables[0].ptr, tables[1].ptr, tables[2].ptr),
                    types: (
                        first(&e.gate, &name("ffn_gate_exps"))?,
                        first(&e.up, &name("ffn_up_exps"))?,
                        first(&e.down, &name("ffn_down_exps"))?,
                    ),
                    n_exp: e.gate.len(),
                    n_used: e.n_used,
                    ffn: f.width(),
                    mode,
                    renorm,
                    gelu: act == Activation::GeluTanh,
                };
                let keep = e.gate.iter().chain(&e.up).chain(&e.down).cloned().collect();
                Self::Experts(Box::new(Experts {
                    args,
                    _router: router,
                    _tables: tables,
                    _keep: keep,
                }))
            }
        })
    }
}
