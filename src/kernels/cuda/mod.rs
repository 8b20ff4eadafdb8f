//! The fused CUDA decoder: runs a [`Recipe`] with mlcli's own kernels (`kernels.cu`) instead
//! of Candle's op-by-op graph.
//!
//! - Products quantize their input to 8 bits per 32 values and take integer dot products
//!   with the GGUF blocks in place (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), as llama.cpp does
//!   on the CPU and the GPU, so the logits stay close to the CPU build's.
//! - Prompts: int8 tensor-core tiles for the products (cuBLAS on weights unpacked to bf16 for
//!   prompts of 128 tokens or more), flash attention on the tensor cores. One token: a warp
//!   per output row, attention that ropes and stores its own key and splits the keys,
//!   gate/up with the activation in one kernel. Norms and activations write the next
//!   product's quantized input directly.
//! - All buffers, the f16 KV cache included, are allocated once. Kernels read the position
//!   and token ids from device memory, so the one-token step is captured once as a CUDA graph
//!   and replayed for every generated token: one launch per token instead of hundreds.

mod ffn;
mod gemm;
mod kernels;

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph, CudaSlice, CudaStream, DevicePtr};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use self::ffn::Ffn;
use self::kernels::{driver, AttnArgs, Kernels, Mat, MoeBufs, Ptr, RopeArgs};
use crate::kernels::Activation;
use crate::models::layers::norm::RmsNorm;
use crate::models::recipe::{self, Recipe, Unsupported};
use crate::{Error, Result};

/// Keys per attention split at least (a warp's 32 for each of the block's four warps).
const MIN_CHUNK: usize = 128;
/// Splits of one step at most (the kernel's limit: its join reads the splits' partials of a
/// head in shared memory, 256 at most).
const MAX_SPLITS: usize = 256;

/// Key splits of a one-token step at `len` positions: one per `MIN_CHUNK` keys, at most
/// `most`. A sliding-window layer takes only those its window spans: splits past the window's
/// keys held no keys but still ran (query, norm and RoPE, partials) and were joined.
fn step_splits(len: usize, window: usize, most: usize) -> usize {
    let keys = match window {
        0 => len,
        w => len.min(w),
    };
    keys.div_ceil(MIN_CHUNK).clamp(1, most.max(1))
}

/// The most splits a step launches: as many as put the same number of blocks on every SM,
/// two fewer than an SM holds (`per_sm`; one at least), `groups` blocks per split. The splits
/// of a step run together and the last joins them all: every block past an even share waits
/// for a second wave, and every split is one more partial to join. On an H100 at 32,768
/// positions (132 SMs, Qwen3 8B: 8 groups, six blocks an SM), 128 splits (1.3 waves) gave
/// 137 t/s, 99 (six an SM) 156, 82 and 50 (uneven) 148 and 147, 66 (four an SM) 162 and
/// 33 151; on the Gemma 3 1B shape (one group, heads of 256, three an SM) 256 splits gave
/// 445, 132 457, 128 461 and 64 445.
fn wave_splits(sms: usize, per_sm: usize, groups: usize, ctx: usize) -> usize {
    let blocks = sms * per_sm.saturating_sub(2).max(1);
    (blocks / groups.max(1)).clamp(1, MAX_SPLITS.min(ctx.div_ceil(MIN_CHUNK).max(1)))
}

/// The ggml id of a weight type the kernels multiply, with its block bytes and values.
fn type_id(t: GgmlDType) -> Option<(i32, usize, usize)> {
    Some(match t {
        GgmlDType::Q4_0 => (2, 18, 32),
        GgmlDType::Q4_1 => (3, 20, 32),
        GgmlDType::Q5_0 => (6, 22, 32),
        GgmlDType::Q8_0 => (8, 34, 32),
        GgmlDType::Q4K => (12, 144, 256),
        GgmlDType::Q6K => (14, 210, 256),
        _ => return None,
    })
}

const SUPPORTED: &str = "Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K";

fn ptr_of<T>(s: &CudaSlice<T>, stream: &Arc<CudaStream>) -> Ptr {
    let (p, _sync) = s.device_ptr(stream);
    p
}

/// Device memory with its address taken once, so launches (and graph capture) never touch
/// cudarc's event tracking.
struct DevBuf<T> {
    ptr: Ptr,
    _mem: CudaSlice<T>,
}

impl<T> DevBuf<T> {
    fn new(mem: CudaSlice<T>, stream: &Arc<CudaStream>) -> Self {
        Self {
            ptr: ptr_of(&mem, stream),
            _mem: mem,
        }
    }
}

fn opt(b: &Option<DevBuf<f32>>) -> Ptr {
    b.as_ref().map_or(0, |b| b.ptr)
}

/// A weight matrix in place on the device (the tensor is kept alive with it).
struct Weight {
    mat: Mat,
    _keep: Arc<QTensor>,
}

impl Weight {
    fn new(t: &Arc<QTensor>, what: &str) -> Result<Self> {
        let (rows, _) = t.shape().dims2()?;
        let (ty, _, _) = type_id(t.dtype()).ok_or_else(|| {
            Error::Internal(format!(
                "{what}: weight type {:?} has no fused CUDA kernel; supported: {SUPPORTED}",
                t.dtype()
            ))
        })?;
        Ok(Self {
            mat: Mat {
                ptr: t.device_ptr()? as Ptr,
                ty,
                rows,
            },
            _keep: t.clone(),
        })
    }
}

/// One block's weights and norms on the device, with its KV cache.
struct Layer {
    attn_norm: DevBuf<f32>,
    q: Weight,
    k: Weight,
    v: Weight,
    o: Weight,
    q_norm: Option<DevBuf<f32>>,
    k_norm: Option<DevBuf<f32>>,
    qk_eps: f32,
    attn: AttnArgs,
    rope: RopeArgs,
    _factors: Option<CudaSlice<f32>>,
    post_attn_norm: Option<DevBuf<f32>>,
    ffn_norm: DevBuf<f32>,
    ffn: Ffn,
    gelu: bool,
    post_ffn_norm: Option<DevBuf<f32>>,
    kc: DevBuf<u16>,
    vc: DevBuf<u16>,
}

/// Scratch buffers for up to `max_tokens` tokens.
struct Buffers {
    ids: CudaSlice<i32>,
    pos: CudaSlice<i32>,
    h: CudaSlice<f32>,
    t: CudaSlice<f32>,
    xq: CudaSlice<u8>,
    xq2: CudaSlice<u8>,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    g: CudaSlice<f32>,
    u: CudaSlice<f32>,
    xn: CudaSlice<f32>,
    route_ids: CudaSlice<i32>,
    route_w: CudaSlice<f32>,
    moe_y: CudaSlice<f32>,
    moe_logits: CudaSlice<f32>,
    moe_counts: CudaSlice<i32>,
    moe_list: CudaSlice<i32>,
    part: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    best: CudaSlice<i32>,
    done: CudaSlice<u32>,
    count: CudaSlice<u32>,
    arg_v: CudaSlice<f32>,
    arg_i: CudaSlice<i32>,
}

/// Addresses of the buffers (taken once; launches use these).
#[derive(Clone, Copy)]
struct Ptrs {
    ids: Ptr,
    pos: Ptr,
    h: Ptr,
    t: Ptr,
    xq: Ptr,
    xq2: Ptr,
    q: Ptr,
    k: Ptr,
    v: Ptr,
    g: Ptr,
    u: Ptr,
    xn: Ptr,
    route_ids: Ptr,
    route_w: Ptr,
    moe_y: Ptr,
    moe_logits: Ptr,
    moe_counts: Ptr,
    moe_list: Ptr,
    part: Ptr,
    logits: Ptr,
    best: Ptr,
    done: Ptr,
    count: Ptr,
    arg_v: Ptr,
    arg_i: Ptr,
}

/// The captured one-token step.
struct Graph(CudaGraph);

// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialized
// (CUDA's graph thread-safety rules); the decoder owns it and takes `&mut self` to launch it,
// so moving the decoder to another thread (the chat UI's worker) keeps every call serialized.
unsafe impl Send for Graph {}

/// A decoder running a [`Recipe`] on one CUDA device.
pub struct Decoder {
    k: Kernels,
    layers: Vec<Layer>,
    embed: Weight,
    embed_row_bytes: usize,
    embed_scale: f32,
    norm: DevBuf<f32>,
    eps: f32,
    output: Weight,
    final_softcap: f32,
    hidden: usize,
    vocab: usize,
    ctx: usize,
    max_tokens: usize,
    /// The most attention splits of a step ([`wave_splits`]).
    splits: usize,
    buf: Buffers,
    p: Ptrs,
    /// cuBLAS for prompts of at least [`gemm::MIN_TOKENS`] tokens (none when `max_tokens` is
    /// shorter or `MLCLI_CUDA_GEMM=0`: the int8 tiles then take every prompt).
    gemm: Option<gemm::Gemm>,
    /// Prompt attention on the tensor cores (`attn_flash`); `MLCLI_CUDA_FLASH=0` takes the
    /// CPU-order kernel (`attn_seq`) instead, for comparing with the CPU build step by step.
    flash: bool,
    /// Captured one-token steps, by the number of attention splits they launch.
    graphs: Vec<Option<Graph>>,
    use_graph: bool,
    trace: bool,
}

/// Whether `recipe` is of a shape the kernels run (dimensions, weight types); why not if not.
pub fn check(recipe: &Recipe) -> std::result::Result<(), Unsupported> {
    let types = |t: &Arc<QTensor>| type_id(t.dtype()).is_some();
    let first = recipe.blocks.first().ok_or("the model has no blocks")?;
    let (hidden, d) = (first.attn.hidden, first.attn.head_dim);
    if !(d.is_multiple_of(64) && d <= 256) {
        return Err(format!(
            "head width {d} (the fused kernels take multiples of 64 up to 256)"
        ));
    }
    if !hidden.is_multiple_of(32) {
        return Err(format!("model width {hidden} is not a multiple of 32"));
    }
    for (i, b) in recipe.blocks.iter().enumerate() {
        for (name, w) in [
            ("attn_q", &b.q),
            ("attn_k", &b.k),
            ("attn_v", &b.v),
            ("attn_output", &b.o),
        ] {
            if !types(w) {
                return Err(format!(
                    "blk.{i}.{name} is {:?}; the fused kernels take {SUPPORTED}",
                    w.dtype()
                ));
            }
        }
        if b.attn.head_dim != d || b.attn.hidden != hidden {
            return Err("blocks of different widths".into());
        }
        ffn::check(i, &b.ffn)?;
        if matches!(b.ffn, recipe::Ffn::Experts(_)) && b.post_ffn_norm.is_some() {
            return Err("experts with a norm after them".into());
        }
    }
    for (name, w) in [("token_embd", &recipe.embed), ("output", &recipe.output)] {
        if !types(w) {
            return Err(format!(
                "{name} is {:?}; the fused kernels take {SUPPORTED}",
                w.dtype()
            ));
        }
    }
    Ok(())
}

fn upload(stream: &Arc<CudaStream>, t: &Tensor) -> Result<CudaSlice<f32>> {
    let host: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    stream.clone_htod(&host).map_err(driver("upload"))
}

fn upload_norm(stream: &Arc<CudaStream>, n: &RmsNorm) -> Result<DevBuf<f32>> {
    Ok(DevBuf::new(upload(stream, n.weight())?, stream))
}

fn zeros<T>(stream: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>>
where
    T: candle_core::cuda_backend::cudarc::driver::DeviceRepr
        + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits,
{
    stream.alloc_zeros::<T>(n.max(1)).map_err(driver("alloc"))
}

/// Whether the switch `name` is set to `0`.
fn switched_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "0")
}

impl Decoder {
    /// Uploads what the kernels need beside the weights (norms, tables) and allocates the
    /// KV cache for `ctx` positions and scratch for `max_tokens` tokens per call.
    pub fn new(recipe: &Recipe, device: &Device, ctx: usize, max_tokens: usize) -> Result<Self> {
        check(recipe).map_err(Error::Internal)?;
        let Device::Cuda(dev) = device else {
            return Err(Error::Device(
                "the fused decoder runs on CUDA devices".into(),
            ));
        };
        let stream = dev.cuda_stream();
        let k = Kernels::load(&stream)?;
        let first = &recipe.blocks[0].attn;
        let (hidden, d) = (first.hidden, first.head_dim);
        let max_tokens = max_tokens.clamp(1, ctx.max(1));
        let mut layers = Vec::with_capacity(recipe.blocks.len());
        let (mut max_q, mut max_kv, mut ffn, mut max_heads) = (0, 0, 0, 0);
        let mut routed = 0; // the most experts per token
        let mut n_exp = 0; // the most experts in a block
        let mut dense = 0; // the most values in a matrix the prompt products can unpack
        for (i, b) in recipe.blocks.iter().enumerate() {
            let a = &b.attn;
            let (theta_scale, factors, pos_scale, neox) = b.rope.params();
            let factors = factors
                .map(|f| stream.clone_htod(f).map_err(driver("upload")))
                .transpose()?;
            let f = b.ffn.width();
            max_q = max_q.max(a.n_heads * d);
            max_kv = max_kv.max(a.n_kv_heads * d);
            max_heads = max_heads.max(a.n_heads);
            ffn = ffn.max(f);
            dense = dense.max(a.n_heads.max(a.n_kv_heads) * d * hidden);
            if matches!(b.ffn, recipe::Ffn::Dense { .. }) {
                dense = dense.max(f * hidden);
            }
            let name = |s: &str| format!("blk.{i}.{s}");
            if let recipe::Ffn::Experts(e) = &b.ffn {
                routed = routed.max(e.n_used);
                n_exp = n_exp.max(e.gate.len());
            }
            layers.push(Layer {
                attn_norm: upload_norm(&stream, &b.attn_norm)?,
                q: Weight::new(&b.q, &name("attn_q"))?,
                k: Weight::new(&b.k, &name("attn_k"))?,
                v: Weight::new(&b.v, &name("attn_v"))?,
                o: Weight::new(&b.o, &name("attn_output"))?,
                qk_eps: b.q_norm.as_ref().map_or(0.0, |n| n.eps()),
                q_norm: b
                    .q_norm
                    .as_ref()
                    .map(|n| upload_norm(&stream, n))
                    .transpose()?,
                k_norm: b
                    .k_norm
                    .as_ref()
                    .map(|n| upload_norm(&stream, n))
                    .transpose()?,
                attn: AttnArgs {
                    n_heads: a.n_heads,
                    n_kv: a.n_kv_heads,
                    d,
                    scale: a.scale as f32,
                    softcap: a.softcap.map_or(0.0, |c| c as f32),
                    window: a.sliding_window.unwrap_or(0),
                    scale_q: a.scale_queries,
                },
                rope: RopeArgs {
                    theta_scale,
                    factors: factors.as_ref().map_or(0, |f| ptr_of(f, &stream)),
                    pos_scale,
                    neox,
                },
                _factors: factors,
                post_attn_norm: b
                    .post_attn_norm
                    .as_ref()
                    .map(|n| upload_norm(&stream, n))
                    .transpose()?,
                ffn_norm: upload_norm(&stream, &b.ffn_norm)?,
                ffn: Ffn::new(&b.ffn, b.act, &stream, i)?,
                gelu: b.act == Activation::GeluTanh,
                post_ffn_norm: b
                    .post_ffn_norm
                    .as_ref()
                    .map(|n| upload_norm(&stream, n))
                    .transpose()?,
                kc: DevBuf::new(zeros(&stream, a.n_kv_heads * ctx * d)?, &stream),
                vc: DevBuf::new(zeros(&stream, a.n_kv_heads * ctx * d)?, &stream),
            });
        }
        let (vocab, _) = recipe.output.shape().dims2()?;
        let (_, eblock_bytes, eblock) = type_id(recipe.embed.dtype()).ok_or_else(|| {
            Error::Internal(format!(
                "token_embd is {:?}; supported: {SUPPORTED}",
                recipe.embed.dtype()
            ))
        })?;
        let widest = hidden.max(max_q).max(ffn);
        let t = max_tokens;
        k.allow_shared(
            kernels::norm_shared(hidden)
                .max(kernels::seq_shared(d))
                .max(kernels::one_shared(d))
                .max(kernels::flash_shared(d)),
        )?;
        let splits = match layers.first() {
            Some(l) => {
                let (sms, per_sm, groups) = k.one_wave(&l.attn)?;
                wave_splits(sms, per_sm, groups, ctx)
            }
            None => 1,
        };
        let buf = Buffers {
            ids: zeros(&stream, t)?,
            pos: zeros(&stream, 1)?,
            h: zeros(&stream, t * hidden)?,
            t: zeros(&stream, t * hidden)?,
            xq: zeros(&stream, t * widest / 32 * 40)?,
            // One token's gated activation, or every (token, expert) pair's.
            xq2: zeros(&stream, ffn / 32 * 40 * (t * routed).max(1))?,
            q: zeros(&stream, t * max_q)?,
            k: zeros(&stream, t * max_kv)?,
            v: zeros(&stream, t * max_kv)?,
            // A prompt's gate and up outputs: per token, or per (token, expert) pair.
            g: zeros(&stream, t * ffn * routed.max(1))?,
            u: zeros(&stream, t * ffn * routed.max(1))?,
            xn: zeros(&stream, if routed > 0 { t * hidden } else { 1 })?,
            route_ids: zeros(&stream, t * routed)?,
            route_w: zeros(&stream, t * routed)?,
            moe_y: zeros(&stream, if t > 1 { t * routed * hidden } else { 0 })?,
            moe_logits: zeros(&stream, t * n_exp)?,
            moe_counts: zeros(&stream, n_exp)?,
            moe_list: zeros(&stream, n_exp * t)?,
            part: zeros(&stream, max_heads * splits * (d + 2))?,
            logits: zeros(&stream, vocab)?,
            best: zeros(&stream, 1)?,
            done: zeros(&stream, max_heads)?,
            count: zeros(&stream, 1)?,
            arg_v: zeros(&stream, vocab.div_ceil(1024))?,
            arg_i: zeros(&stream, vocab.div_ceil(1024))?,
        };
        let s = &stream;
        let p = Ptrs {
            ids: ptr_of(&buf.ids, s),
            pos: ptr_of(&buf.pos, s),
            h: ptr_of(&buf.h, s),
            t: ptr_of(&buf.t, s),
            xq: ptr_of(&buf.xq, s),
            xq2: ptr_of(&buf.xq2, s),
            q: ptr_of(&buf.q, s),
            k: ptr_of(&buf.k, s),
            v: ptr_of(&buf.v, s),
            g: ptr_of(&buf.g, s),
            u: ptr_of(&buf.u, s),
            xn: ptr_of(&buf.xn, s),
            route_ids: ptr_of(&buf.route_ids, s),
            route_w: ptr_of(&buf.route_w, s),
            moe_y: ptr_of(&buf.moe_y, s),
            moe_logits: ptr_of(&buf.moe_logits, s),
            moe_counts: ptr_of(&buf.moe_counts, s),
            moe_list: ptr_of(&buf.moe_list, s),
            part: ptr_of(&buf.part, s),
            logits: ptr_of(&buf.logits, s),
            best: ptr_of(&buf.best, s),
            done: ptr_of(&buf.done, s),
            count: ptr_of(&buf.count, s),
            arg_v: ptr_of(&buf.arg_v, s),
            arg_i: ptr_of(&buf.arg_i, s),
        };
        let gemm = (max_tokens >= gemm::MIN_TOKENS && !switched_off("MLCLI_CUDA_GEMM"))
            .then(|| gemm::Gemm::new(&stream, dense, t * widest))
            .transpose()?;
        Ok(Self {
            k,
            layers,
            embed: Weight::new(&recipe.embed, "token_embd")?,
            embed_row_bytes: hidden / eblock * eblock_bytes,
            embed_scale: recipe.embed_scale,
            norm: upload_norm(&stream, &recipe.norm)?,
            eps: recipe.norm.eps(),
            output: Weight::new(&recipe.output, "output")?,
            final_softcap: recipe.final_softcap.unwrap_or(0.0),
            hidden,
            vocab,
            ctx,
            max_tokens,
            splits,
            buf,
            p,
            gemm,
            flash: !switched_off("MLCLI_CUDA_FLASH"),
            graphs: (0..=splits).map(|_| None).collect(),
            use_graph: !switched_off("MLCLI_CUDA_GRAPH"),
            trace: std::env::var_os("MLCLI_CUDA_TRACE").is_some(),
        })
    }

    /// Feeds `tokens` at positions `pos..` and returns the last one's logits.
    pub fn feed(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.run(tokens, pos)?;
        let stream = self.k.stream().clone();
        let logits = stream
            .clone_dtoh(&self.buf.logits)
            .map_err(driver("reading the logits"))?;
        Ok(logits)
    }

    /// Feeds `tokens` and returns the id of the largest logit, computed on the GPU.
    pub fn feed_greedy(&mut self, tokens: &[u32], pos: usize) -> Result<u32> {
        self.run(tokens, pos)?;
        let stream = self.k.stream().clone();
        let best = stream
            .clone_dtoh(&self.buf.best)
            .map_err(driver("reading the argmax"))?;
        Ok(best.first().copied().unwrap_or(0) as u32)
    }

    fn run(&mut self, tokens: &[u32], pos: usize) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let rows = self.embed.mat.rows;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= rows) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the embedding table ({rows} rows)"
            )));
        }
        // The engine's cache checked the context (`Cache::begin`); this guards the buffers.
        if pos + tokens.len() > self.ctx {
            return Err(Error::Internal(format!(
                "fused decoder fed positions {pos}..{} past its {} cache rows",
                pos + tokens.len(),
                self.ctx
            )));
        }
        let stream = self.k.stream().clone();
        for (i, chunk) in tokens.chunks(self.max_tokens).enumerate() {
            let at = pos + i * self.max_tokens;
            let ids: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
            stream
                .memcpy_htod(&ids, &mut self.buf.ids.slice_mut(..ids.len()))
                .map_err(driver("copying token ids"))?;
            stream
                .memcpy_htod(&[at as i32], &mut self.buf.pos)
                .map_err(driver("copying the position"))?;
            // Only as many key splits as the last query needs (the graph of a one-token step
            // is captured once per count).
            let nsplit = step_splits(at + chunk.len(), 0, self.splits);
            if chunk.len() == 1 && self.use_graph {
                if self.graphs[nsplit].is_none() {
                    stream
                        .begin_capture(
                            sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                        )
                        .map_err(driver("starting graph capture"))?;
                    let launched = self.step(1, nsplit);
                    let graph = stream
                        .end_capture(sys::CUgraphInstantiate_flags(0))
                        .map_err(driver("capturing the decode step"))?;
                    launched?;
                    self.graphs[nsplit] = graph.map(Graph);
                }
                match &self.graphs[nsplit] {
                    Some(g) => g.0.launch().map_err(driver("launching the decode graph"))?,
                    None => self.step(1, nsplit)?,
                }
            } else {
                self.step(chunk.len(), nsplit)?;
            }
        }
        Ok(())
    }

    /// Prints statistics of the residual stream after block `i` (`MLCLI_CUDA_TRACE`, for
    /// comparing with `inspect --layer-trace` on the CPU; prompts only, never in a graph).
    fn trace_block(&self, i: usize, n: usize) -> Result<()> {
        let h = self
            .k
            .stream()
            .clone_dtoh(&self.buf.h.slice(..n * self.hidden))
            .map_err(driver("reading the trace"))?;
        let len = h.len() as f64;
        let mean = h.iter().map(|&x| x as f64).sum::<f64>() / len;
        let var = h.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / len;
        let (lo, hi) = h
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        eprintln!(
            "trace block {i:>2}: mean {mean:+.6} std {:.6} min {lo:+.4} max {hi:+.4} last[0..4] {:?}",
            var.sqrt(),
            &h[(n - 1) * self.hidden..(n - 1) * self.hidden + 4]
        );
        Ok(())
    }

    /// Launches one forward pass over `n` tokens (ids and position already on the device):
    /// the one-token form for a single token, the prompt form otherwise.
    fn step(&self, n: usize, nsplit: usize) -> Result<()> {
        let (k, p, hd) = (&self.k, self.p, self.hidden);
        let first = self.layers.first().map_or(0, |l| l.attn_norm.ptr);
        k.embed(
            self.embed.mat,
            self.embed_row_bytes,
            p.ids,
            n,
            p.h,
            hd,
            self.embed_scale,
            (first, self.eps, p.xq),
        )?;
        for (i, l) in self.layers.iter().enumerate() {
            // The next block's (or the final) norm, which each block applies to its output
            // as the next one's quantized input.
            let next = self
                .layers
                .get(i + 1)
                .map_or(self.norm.ptr, |nl| nl.attn_norm.ptr);
            match n {
                1 => self.block_one(l, next, nsplit)?,
                _ => self.block_prompt(l, next, n)?,
            }
            if self.trace && n > 1 {
                self.trace_block(i, n)?;
            }
        }
        // The last token: output layer (its input quantized by the last block), argmax.
        let out = [(self.output.mat, p.logits)];
        let xq = p.xq + ((n - 1) * hd / 32 * 40) as Ptr;
        k.mmv(&out, 0, xq, hd, self.final_softcap)?;
        k.argmax(p.logits, self.vocab, (p.arg_v, p.arg_i, p.count), p.best)
    }

    /// One block for one token, seven launches: Q/K/V; attention with the norms, RoPE and
    /// cache store of the token's own key (the splits joined by the last); the output
    /// projection; a norm; gate and up with the gated activation; down; a norm (the next
    /// block's input, with Gemma's post-norms folded into the two norms).
    fn block_one(&self, l: &Layer, next: Ptr, nsplit: usize) -> Result<()> {
        let (k, p, hd, eps) = (&self.k, self.p, self.hidden, self.eps);
        let a = &l.attn;
        k.mmv(
            &[(l.q.mat, p.q), (l.k.mat, p.k), (l.v.mat, p.v)],
            0,
            p.xq,
            hd,
            0.0,
        )?;
        k.attention_one(
            (p.q, p.k, p.v),
            (opt(&l.q_norm), opt(&l.k_norm), l.qk_eps),
            (l.kc.ptr, l.vc.ptr),
            (p.part, p.done),
            p.xq,
            p.pos,
            self.ctx,
            a,
            &l.rope,
            nsplit.min(step_splits(self.ctx, a.window, self.splits)),
        )?;
        let qd = a.n_heads * a.d;
        match &l.post_attn_norm {
            Some(post) => {
                k.mmv(&[(l.o.mat, p.t)], 0, p.xq, qd, 0.0)?;
                k.norm_q8(p.t, post.ptr, p.h, l.ffn_norm.ptr, p.xq, 1, hd, eps)?;
            }
            None => {
                k.mmv(&[(l.o.mat, p.h)], p.h, p.xq, qd, 0.0)?;
                self.ffn_input(l, 1)?;
            }
        }
        let (gate, up, down) = match &l.ffn {
            Ffn::Dense { gate, up, down } => (gate, up, down),
            Ffn::Experts(e) => {
                k.moe(&e.args, &self.moe_bufs(), 1, hd)?;
                return k.norm_q8(0, 0, p.h, next, p.xq, 1, hd, eps);
            }
        };
        let f = gate.mat.rows;
        k.mmv_glu((gate.mat, up.mat), p.xq, hd, l.gelu, p.xq2)?;
        match &l.post_ffn_norm {
            Some(post) => {
                k.mmv(&[(down.mat, p.t)], 0, p.xq2, f, 0.0)?;
                k.norm_q8(p.t, post.ptr, p.h, next, p.xq, 1, hd, eps)
            }
            None => {
                k.mmv(&[(down.mat, p.h)], p.h, p.xq2, f, 0.0)?;
                k.norm_q8(0, 0, p.h, next, p.xq, 1, hd, eps)
            }
        }
    }

    /// One block for `n` prompt tokens: norms, products (int8 tensor-core tiles, or cuBLAS on
    /// unpacked bf16 weights for long prompts), RoPE and the cache store, attention (in
    /// llama.cpp's CPU order, or flash), the gated activation.
    fn block_prompt(&self, l: &Layer, next: Ptr, n: usize) -> Result<()> {
        let (k, p, hd, eps) = (&self.k, self.p, self.hidden, self.eps);
        let a = &l.attn;
        let qkv = [(l.q.mat, p.q), (l.k.mat, p.k), (l.v.mat, p.v)];
        self.products(&qkv, 0, hd, n)?;
        let cache = (l.kc.ptr, l.vc.ptr);
        k.rope_store(
            (p.q, p.k, p.v),
            (opt(&l.q_norm), opt(&l.k_norm), l.qk_eps),
            cache,
            p.pos,
            self.ctx,
            n,
            a,
            &l.rope,
        )?;
        k.attention_prompt(self.flash, p.q, cache, p.xq, p.pos, self.ctx, n, a)?;
        let qd = a.n_heads * a.d;
        match &l.post_attn_norm {
            Some(post) => {
                self.products(&[(l.o.mat, p.t)], 0, qd, n)?;
                k.norm_q8(p.t, post.ptr, p.h, l.ffn_norm.ptr, p.xq, n, hd, eps)?;
            }
            None => {
                self.products(&[(l.o.mat, p.h)], p.h, qd, n)?;
                self.ffn_input(l, n)?;
            }
        }
        let (gate, up, down) = match &l.ffn {
            Ffn::Dense { gate, up, down } => (gate, up, down),
            Ffn::Experts(e) => {
                k.moe(&e.args, &self.moe_bufs(), n, hd)?;
                return k.norm_q8(0, 0, p.h, next, p.xq, n, hd, eps);
            }
        };
        let f = gate.mat.rows;
        self.products(&[(gate.mat, p.g), (up.mat, p.u)], 0, hd, n)?;
        k.glu_q8(p.g, p.u, p.xq, n, f, l.gelu)?;
        match &l.post_ffn_norm {
            Some(post) => {
                self.products(&[(down.mat, p.t)], 0, f, n)?;
                k.norm_q8(p.t, post.ptr, p.h, next, p.xq, n, hd, eps)
            }
            None => {
                self.products(&[(down.mat, p.h)], p.h, f, n)?;
                k.norm_q8(0, 0, p.h, next, p.xq, n, hd, eps)
            }
        }
    }

    /// A prompt's products over the q8 input `xq` (`k` wide, `n` tokens): cuBLAS on unpacked
    /// bf16 weights for long prompts, the int8 tiles otherwise.
    fn products(&self, mats: &[(Mat, Ptr)], add0: Ptr, k: usize, n: usize) -> Result<()> {
        match &self.gemm {
            Some(g) if n >= gemm::MIN_TOKENS => g.products(&self.k, mats, add0, self.p.xq, k, n),
            _ => self.k.mmq(mats, add0, self.p.xq, k, n),
        }
    }

    /// The norm before a block's feed-forward network for `n` rows (no post-attention norm):
    /// its q8 input, and for experts also the f32 values the router reads.
    fn ffn_input(&self, l: &Layer, n: usize) -> Result<()> {
        let (k, p, hd, eps) = (&self.k, self.p, self.hidden, self.eps);
        match l.ffn {
            Ffn::Dense { .. } => k.norm_q8(0, 0, p.h, l.ffn_norm.ptr, p.xq, n, hd, eps),
            Ffn::Experts(_) => k.norm_q8_f32((p.h, l.ffn_norm.ptr, p.xq, p.xn), n, hd, eps),
        }
    }

    /// The buffers a mixture-of-experts pass uses.
    fn moe_bufs(&self) -> MoeBufs {
        let p = self.p;
        MoeBufs {
            x: p.xn,
            xq: p.xq,
            logits: p.moe_logits,
            ids: p.route_ids,
            wts: p.route_w,
            act: p.xq2,
            h: p.h,
            gate_up: (p.g, p.u),
            down: p.moe_y,
            groups: (p.moe_counts, p.moe_list),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_split_their_keys_up_to_the_most_and_windows_only_theirs() {
        assert_eq!(step_splits(1, 0, 66), 1);
        assert_eq!(step_splits(129, 0, 66), 2);
        assert_eq!(step_splits(32_769, 0, 66), 66);
        assert_eq!(step_splits(32_769, 512, 66), 4);
        assert_eq!(step_splits(100, 512, 66), 1);
    }

    #[test]
    fn splits_put_as_many_blocks_on_every_sm() {
        // Qwen3 8B on an H100: 8 groups, six blocks an SM → four an SM.
        assert_eq!(wave_splits(132, 6, 8, 40_960), 66);
        // Gemma 3 1B: one group, three an SM → one an SM.
        assert_eq!(wave_splits(132, 3, 1, 40_960), 132);
        // Short contexts take no more than their keys need; a full GPU one at least.
        assert_eq!(wave_splits(132, 6, 8, 1_000), 8);
        assert_eq!(wave_splits(132, 6, 2_000, 40_960), 1);
        assert_eq!(wave_splits(132, 1, 1, 1 << 20), 132);
        assert_eq!(wave_splits(1_000, 6, 1, 1 << 20), MAX_SPLITS);
    }
}
