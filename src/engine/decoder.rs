//! Whether a model runs on its backend's fused decoder (the CUDA one in `kernels::cuda`) or
//! layer by layer through its family's `forward`, and why; the engine asks once per load.
//! The fused decoder keeps its KV rows on the device; the position is the engine's cache's.
//!
//! `MLCLI_CUDA_DECODER=layers` keeps a CUDA model on the layer-by-layer path (for
//! comparisons); `MLCLI_CUDA_GRAPH=0` runs the fused decoder without CUDA graphs.

use candle_core::Device;

use crate::models::CausalLm;
use crate::Result;

/// A fused decoder for one model, device and context size.
pub struct Fused {
    #[cfg(feature = "cuda")]
    dec: crate::kernels::cuda::Decoder,
}

/// Builds the fused decoder for `model` when `device` has one and the model fits it, with
/// the reason either way (for `-v`).
pub fn build(
    model: &dyn CausalLm,
    device: &Device,
    ctx: usize,
    max_tokens: usize,
) -> Result<(Option<Fused>, String)> {
    if device.is_cpu() {
        return Ok((None, "layer by layer (CPU)".into()));
    }
    if std::env::var("MLCLI_CUDA_DECODER").is_ok_and(|v| v == "layers") {
        return Ok((None, "layer by layer (MLCLI_CUDA_DECODER=layers)".into()));
    }
    build_on(model, device, ctx, max_tokens)
}

#[cfg(feature = "cuda")]
fn build_on(
    model: &dyn CausalLm,
    device: &Device,
    ctx: usize,
    max_tokens: usize,
) -> Result<(Option<Fused>, String)> {
    if !device.is_cuda() {
        return Ok((
            None,
            "layer by layer (no fused decoder for this device)".into(),
        ));
    }
    let recipe = match model.recipe() {
        Ok(r) => r,
        Err(why) => return Ok((None, format!("layer by layer: {why}"))),
    };
    if let Err(why) = crate::kernels::cuda::check(&recipe) {
        return Ok((None, format!("layer by layer: {why}")));
    }
    let dec = crate::kernels::cuda::Decoder::new(&recipe, device, ctx, max_tokens)?;
    Ok((Some(Fused { dec }), "fused CUDA decoder".into()))
}

#[cfg(not(feature = "cuda"))]
fn build_on(
    _model: &dyn CausalLm,
    _device: &Device,
    _ctx: usize,
    _max_tokens: usize,
) -> Result<(Option<Fused>, String)> {
    Ok((
        None,
        "layer by layer (no fused decoder for this device)".into(),
    ))
}

impl Fused {
    /// Feeds `tokens` at positions `pos..` and returns the last token's logits.
    pub fn feed(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        #[cfg(feature = "cuda")]
        return self.dec.feed(tokens, pos);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (tokens, pos);
            Err(crate::Error::Device("no fused decoder compiled in".into()))
        }
    }

    /// Feeds `tokens` and returns the id of the largest logit, found on the device.
    pub fn feed_greedy(&mut self, tokens: &[u32], pos: usize) -> Result<u32> {
        #[cfg(feature = "cuda")]
        return self.dec.feed_greedy(tokens, pos);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (tokens, pos);
            Err(crate::Error::Device("no fused decoder compiled in".into()))
        }
    }
}
