//! The PTX built from `kernels.cu` (by `build.rs`) and one typed launcher per kernel.
//!
//! Launchers take raw device addresses (`u64`) and plain numbers, never cudarc slices, so a
//! launch records no events and can be captured into a CUDA graph as it is.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;

use crate::{Error, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mlcli_kernels.ptx"));

/// A device address (0 for none).
pub type Ptr = u64;

/// Maps a driver error to ours, naming what failed.
pub fn driver(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Device(format!("CUDA {what}: {e}"))
}

/// A quantized matrix on the device.
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    /// Its first byte.
    pub ptr: Ptr,
    /// The ggml type id.
    pub ty: i32,
    /// Output rows.
    pub rows: usize,
}

/// The loaded kernels and the stream they run on.
pub struct Kernels {
    stream: Arc<CudaStream>,
    mmv: CudaFunction,
    mmq: CudaFunction,
    mmv_glu: CudaFunction,
    embed: CudaFunction,
    norm_q8: CudaFunction,
    rope_store: CudaFunction,
    /// One-token attention by head width (64, 128, 192, 256) and query heads per block
    /// (1..=4): `attn_one{g}_{d}`.
    attn_one: [[CudaFunction; 4]; 4],
    /// Eight query heads of 128 per block, two sets of four warps: `attn_one8_128`.
    attn_one8: CudaFunction,
    attn_seq: CudaFunction,
    /// Prompt attention on the tensor cores for heads of 64, 128, 192 and 256
    /// (`attn_flash64`..`attn_flash256`).
    attn_flash: [CudaFunction; 4],
    glu_q8: CudaFunction,
    argmax: CudaFunction,
    moe_logits: CudaFunction,
    moe_topk: CudaFunction,
    moe_glu: CudaFunction,
    moe_down: CudaFunction,
    moe_zero: CudaFunction,
    moe_group: CudaFunction,
    mmq_moe: CudaFunction,
    moe_combine: CudaFunction,
    unpack_bf16: CudaFunction,
    q8_bf16: CudaFunction,
}

/// Routed experts of one block on the device: the f32 router and a table of expert matrix
/// addresses per projection.
#[derive(Clone, Copy, Debug)]
pub struct MoeArgs {
    /// The router `(n_exp, hidden)`, f32.
    pub router: Ptr,
    /// Tables of `n_exp` addresses: gate, up, down.
    pub tables: (Ptr, Ptr, Ptr),
    /// ggml type ids of gate, up, down.
    pub types: (i32, i32, i32),
    /// Experts.
    pub n_exp: usize,
    /// Experts per token.
    pub n_used: usize,
    /// Width of one expert.
    pub ffn: usize,
    /// 0: softmax over all then top-k; 1: top-k then softmax over those.
    pub mode: i32,
    /// With mode 0: renormalize the chosen weights to sum 1.
    pub renorm: bool,
    /// GELU (tanh) instead of SiLU for the gate.
    pub gelu: bool,
}

/// Where one MoE pass reads and writes: the normed input (f32 and q8), the routes, the
/// per-pair activations, and the residual rows the result is added to.
#[derive(Clone, Copy, Debug)]
pub struct MoeBufs {
    /// Normed input, f32 `(n, hidden)`.
    pub x: Ptr,
    /// The same, q8.
    pub xq: Ptr,
    /// Router logits `(n, n_exp)` f32.
    pub logits: Ptr,
    /// Chosen experts `(n, n_used)` i32.
    pub ids: Ptr,
    /// Their weights `(n, n_used)` f32.
    pub wts: Ptr,
    /// Gated activations, q8, `(n · n_used, ffn)`.
    pub act: Ptr,
    /// Residual rows `(n, hidden)`.
    pub h: Ptr,
    /// Prompts: gate and up outputs, f32 `(n · n_used, ffn)` each.
    pub gate_up: (Ptr, Ptr),
    /// Prompts: down outputs, f32 `(n · n_used, hidden)`.
    pub down: Ptr,
    /// Prompts: pairs per expert `(n_exp)` and each expert's pair list `(n_exp, n)`.
    pub groups: (Ptr, Ptr),
}

fn cfg(grid: (usize, usize, usize), block: usize, shared: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: shared as u32,
    }
}

/// Rotary-embedding parameters of one layer.
#[derive(Clone, Copy, Debug)]
pub struct RopeArgs {
    /// `base^(-2 / head_dim)`.
    pub theta_scale: f32,
    /// Per-frequency divisors (0 for none).
    pub factors: Ptr,
    /// Position multiplier (linear scaling).
    pub pos_scale: f32,
    /// Half-split pairs rather than interleaved.
    pub neox: bool,
}

/// Attention shape and options of one layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnArgs {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv: usize,
    /// Head width.
    pub d: usize,
    /// Score multiplier.
    pub scale: f32,
    /// Score soft-cap (0 for none).
    pub softcap: f32,
    /// Window (0 for none).
    pub window: usize,
    /// The scale multiplies the queries before they round to f16 (Gemma), not the scores.
    pub scale_q: bool,
}

/// Dynamic shared memory of `attn_one` for heads of `d`: four warps' 32 key or value rows.
pub fn one_shared(d: usize) -> usize {
    4 * 32 * d * 2
}

/// Dynamic shared memory of `norm_q8` over rows of `k`.
pub fn norm_shared(k: usize) -> usize {
    16 * k
}

/// Dynamic shared memory of `attn_seq` for heads of `d`: a chunk of K and V rows (as in
/// `seq_chunk`), four queries, four warps' exponents and flags.
pub fn seq_shared(d: usize) -> usize {
    let ck = 8192 / d;
    (ck * (d + 2) * 2).next_multiple_of(16) + ck * d * 2 + 4 * d * 4 + 4 * ck * 4 + 4 * ck
}

/// Dynamic shared memory of `attn_flash` for heads of `d` (flash.cuh's `flash_shared`): a
/// tile of K rows and one of V transposed, 64 keys (32 past 128 dimensions).
pub fn flash_shared(d: usize) -> usize {
    let kt = if d > 128 { 32 } else { 64 };
    kt * (d + 8) * 2 + d * (kt + 8) * 2
}

/// Up to three (matrix, output) pairs, padded with empty ones.
fn three(mats: &[(Mat, Ptr)]) -> ((Mat, Ptr), (Mat, Ptr), (Mat, Ptr)) {
    let none = (
        Mat {
            ptr: 0,
            ty: 0,
            rows: 0,
        },
        0,
    );
    let get = |i: usize| mats.get(i).copied().unwrap_or(none);
    (get(0), get(1), get(2))
}

impl Kernels {
    /// Loads the module onto `stream`'s context.
    pub fn load(stream: &Arc<CudaStream>) -> Result<Self> {
        let module = stream
            .context()
            .load_module(Ptx::from_src(PTX))
            .map_err(driver("loading mlcli's kernels"))?;
        let f = |name: &str| module.load_function(name).map_err(driver(name));
        Ok(Self {
            stream: stream.clone(),
            mmv: f("mmv")?,
            mmq: f("mmq")?,
            mmv_glu: f("mmv_glu")?,
            embed: f("embed")?,
            norm_q8: f("norm_q8")?,
            rope_store: f("rope_store")?,
            attn_one: [
                [
                    f("attn_one1_64")?,
                    f("attn_one2_64")?,
                    f("attn_one3_64")?,
                    f("attn_one4_64")?,
                ],
                [
                    f("attn_one1_128")?,
                    f("attn_one2_128")?,
                    f("attn_one3_128")?,
                    f("attn_one4_128")?,
                ],
                [
                    f("attn_one1_192")?,
                    f("attn_one2_192")?,
                    f("attn_one3_192")?,
                    f("attn_one4_192")?,
                ],
                [
                    f("attn_one1_256")?,
                    f("attn_one2_256")?,
                    f("attn_one3_256")?,
                    f("attn_one4_256")?,
                ],
            ],
            attn_one8: f("attn_one8_128")?,
            attn_seq: f("attn_seq")?,
            attn_flash: [
                f("attn_flash64")?,
                f("attn_flash128")?,
                f("attn_flash192")?,
                f("attn_flash256")?,
            ],
            glu_q8: f("glu_q8")?,
            argmax: f("argmax")?,
            moe_logits: f("moe_logits")?,
            moe_topk: f("moe_topk")?,
            moe_glu: f("moe_glu")?,
            moe_down: f("moe_down")?,
            moe_zero: f("moe_zero")?,
            moe_group: f("moe_group")?,
            mmq_moe: f("mmq_moe")?,
            moe_combine: f("moe_combine")?,
            unpack_bf16: f("unpack_bf16")?,
            q8_bf16: f("q8_bf16")?,
        })
    }

    /// Lets the kernels with dynamic shared memory take `bytes` of it (beyond the default
    /// 48 KiB only where the GPU allows). Set whatever the size: a kernel's static shared
    /// memory counts against the same 48 KiB, so `norm_q8` over a 3,072-wide row (exactly
    /// 48 KiB staged, plus its reduction's 256 bytes) failed to launch without it.
    pub fn allow_shared(&self, bytes: usize) -> Result<()> {
        let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        let fixed = [&self.norm_q8, &self.attn_seq, &self.embed];
        let dynamic = self.attn_one.iter().flatten();
        let dynamic = dynamic.chain([&self.attn_one8]).chain(&self.attn_flash);
        for f in fixed.into_iter().chain(dynamic) {
            f.set_attribute(attr, bytes as i32)
                .map_err(driver("raising the shared-memory limit"))?;
        }
        Ok(())
    }

    /// The stream the kernels run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// One token: `y_m = W_m · x` for up to three matrices over the same q8 input `xq` (`k`
    /// wide); `add0` (0 for none) is added to the first matrix's output; `cap` soft-caps.
    pub fn mmv(&self, mats: &[(Mat, Ptr)], add0: Ptr, xq: Ptr, k: usize, cap: f32) -> Result<()> {
        let (a, b, c) = three(mats);
        let rows = a.0.rows + b.0.rows + c.0.rows;
        let (r0, r1, r2, ki) = (a.0.rows as i32, b.0.rows as i32, c.0.rows as i32, k as i32);
        let mut l = self.stream.launch_builder(&self.mmv);
        l.arg(&a.0.ptr).arg(&b.0.ptr).arg(&c.0.ptr);
        l.arg(&a.0.ty).arg(&b.0.ty).arg(&c.0.ty);
        l.arg(&r0).arg(&r1).arg(&r2);
        l.arg(&a.1).arg(&b.1).arg(&c.1);
        l.arg(&add0).arg(&xq).arg(&ki).arg(&cap);
        let grid = (rows.div_ceil(4), 1, 1);
        // SAFETY: the arguments match the kernel's signature; the caller's buffers hold every
        // width involved.
        unsafe { l.launch(cfg(grid, 128, 0)) }.map_err(driver("mmv"))?;
        Ok(())
    }

    /// One token's gate and up rows (`f` of them) over `xq` and the gated activation,
    /// quantized into `out` (not `xq`).
    pub fn mmv_glu(
        &self,
        (gate, up): (Mat, Mat),
        xq: Ptr,
        k: usize,
        gelu: bool,
        out: Ptr,
    ) -> Result<()> {
        let (ki, gelu) = (k as i32, gelu as i32);
        let mut l = self.stream.launch_builder(&self.mmv_glu);
        l.arg(&gate.ptr).arg(&up.ptr).arg(&gate.ty).arg(&up.ty);
        l.arg(&xq).arg(&ki).arg(&gelu).arg(&out);
        // SAFETY: as in `mmv`; `f` is a multiple of 32.
        unsafe { l.launch(cfg((gate.rows / 32, 1, 1), 1024, 0)) }.map_err(driver("mmv_glu"))?;
        Ok(())
    }

    /// Several tokens: `y_m = W_m · x` over `n` tokens in 64 × 64 tiles (int8 tensor cores on
    /// sm_80+), `add0` added to the first matrix's output.
    pub fn mmq(&self, mats: &[(Mat, Ptr)], add0: Ptr, xq: Ptr, k: usize, n: usize) -> Result<()> {
        let (a, b, c) = three(mats);
        let tiles = |r: usize| r.div_ceil(64);
        let grid = (
            tiles(a.0.rows) + tiles(b.0.rows) + tiles(c.0.rows),
            n.div_ceil(64),
            1,
        );
        let (r0, r1, r2) = (a.0.rows as i32, b.0.rows as i32, c.0.rows as i32);
        let (k, n, cap) = (k as i32, n as i32, 0f32);
        let mut l = self.stream.launch_builder(&self.mmq);
        l.arg(&a.0.ptr).arg(&b.0.ptr).arg(&c.0.ptr);
        l.arg(&a.0.ty).arg(&b.0.ty).arg(&c.0.ty);
        l.arg(&r0).arg(&r1).arg(&r2);
        l.arg(&a.1).arg(&b.1).arg(&c.1);
        l.arg(&add0).arg(&xq).arg(&k).arg(&n).arg(&cap);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg(grid, 128, 0)) }.map_err(driver("mmq"))?;
        Ok(())
    }

    /// The quantized matrix `m` (`k` wide) unpacked into bf16 rows at `out`.
    pub fn unpack_bf16(&self, m: Mat, k: usize, out: Ptr) -> Result<()> {
        let subs = m.rows * (k / 32);
        let (rows, ki) = (m.rows as i32, k as i32);
        let mut l = self.stream.launch_builder(&self.unpack_bf16);
        l.arg(&m.ptr).arg(&m.ty).arg(&rows).arg(&ki).arg(&out);
        // SAFETY: as in `mmv`; `out` holds `rows · k` bf16 values.
        unsafe { l.launch(cfg((subs.div_ceil(256), 1, 1), 256, 0)) }
            .map_err(driver("unpack_bf16"))?;
        Ok(())
    }

    /// `blocks` q8 activation blocks at `xq` as bf16 values at `out`.
    pub fn q8_bf16(&self, xq: Ptr, blocks: usize, out: Ptr) -> Result<()> {
        let b = blocks as i32;
        let mut l = self.stream.launch_builder(&self.q8_bf16);
        l.arg(&xq).arg(&b).arg(&out);
        // SAFETY: as in `mmv`; `out` holds `32 · blocks` bf16 values.
        unsafe { l.launch(cfg((blocks.div_ceil(256), 1, 1), 256, 0)) }
            .map_err(driver("q8_bf16"))?;
        Ok(())
    }

    /// Embedding rows of `n` token ids at `ids` into `out` (`k` wide), times `scale`; with
    /// `norm` (weight, eps, q8 buffer) also the first block's quantized input.
    #[allow(clippy::too_many_arguments)]
    pub fn embed(
        &self,
        table: Mat,
        row_bytes: usize,
        ids: Ptr,
        n: usize,
        out: Ptr,
        k: usize,
        scale: f32,
        norm: (Ptr, f32, Ptr),
    ) -> Result<()> {
        let (rb, ki) = (row_bytes as i32, k as i32);
        let mut l = self.stream.launch_builder(&self.embed);
        l.arg(&table.ptr).arg(&table.ty).arg(&rb).arg(&ids);
        l.arg(&out)
            .arg(&ki)
            .arg(&scale)
            .arg(&norm.0)
            .arg(&norm.1)
            .arg(&norm.2);
        // SAFETY: as in `mmv`; a row of shared memory.
        unsafe { l.launch(cfg((n, 1, 1), 256, 4 * k)) }.map_err(driver("embed"))?;
        Ok(())
    }

    /// For each of `n` rows: `h += rmsnorm(t) · w_post` when `t` is set; then, when `w` is
    /// set, `xq = q8(rmsnorm(h) · w)`.
    #[allow(clippy::too_many_arguments)]
    pub fn norm_q8(
        &self,
        t: Ptr,
        w_post: Ptr,
        h: Ptr,
        w: Ptr,
        xq: Ptr,
        n: usize,
        k: usize,
        eps: f32,
    ) -> Result<()> {
        self.launch_norm((t, w_post, h, w), (xq, 0), n, k, eps)
    }

    /// The `norm_q8` kernel over `n` rows of `k`: the inputs (t, w_post, h, w) and the
    /// outputs (q8, f32 or 0) as [`Self::norm_q8`] and [`Self::norm_q8_f32`] describe them.
    fn launch_norm(
        &self,
        (t, w_post, h, w): (Ptr, Ptr, Ptr, Ptr),
        (xq, out): (Ptr, Ptr),
        n: usize,
        k: usize,
        eps: f32,
    ) -> Result<()> {
        let ki = k as i32;
        let mut l = self.stream.launch_builder(&self.norm_q8);
        l.arg(&t).arg(&w_post).arg(&h).arg(&w).arg(&xq).arg(&out);
        l.arg(&ki).arg(&eps);
        // One token: a thread per value (a warp per q8 block); prompts: 256 per token.
        let block = match n {
            1 => (k.div_ceil(32) * 32).clamp(128, 1024),
            _ => 256,
        };
        // SAFETY: as in `mmv`; the staged rows in shared memory.
        unsafe { l.launch(cfg((n, 1, 1), block, norm_shared(k))) }.map_err(driver("norm_q8"))?;
        Ok(())
    }

    /// Q/K norms and RoPE for `n` tokens at the device position `pos`; K and V into the
    /// layer's f16 cache (`ctx` positions per KV head).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_store(
        &self,
        (q, k, v): (Ptr, Ptr, Ptr),
        (qn, kn, eps): (Ptr, Ptr, f32),
        (kc, vc): (Ptr, Ptr),
        pos: Ptr,
        ctx: usize,
        n: usize,
        a: &AttnArgs,
        r: &RopeArgs,
    ) -> Result<()> {
        let (ctx, h, kv, d) = (ctx as i32, a.n_heads as i32, a.n_kv as i32, a.d as i32);
        let neox = r.neox as i32;
        let mut l = self.stream.launch_builder(&self.rope_store);
        l.arg(&q).arg(&k).arg(&v).arg(&qn).arg(&kn).arg(&eps);
        l.arg(&kc)
            .arg(&vc)
            .arg(&pos)
            .arg(&ctx)
            .arg(&h)
            .arg(&kv)
            .arg(&d);
        l.arg(&r.theta_scale)
            .arg(&r.factors)
            .arg(&r.pos_scale)
            .arg(&neox);
        let grid = (n, a.n_heads + a.n_kv, 1);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg(grid, a.d / 2, 0)) }.map_err(driver("rope_store"))?;
        Ok(())
    }

    /// The one-token attention kernel for `a`'s head width, with as many query heads of one
    /// KV head per block as divide the group, up to four, or eight for heads of 128 (each key
    /// and value row read once for all eight); its query heads and threads per block.
    fn one_kernel(&self, a: &AttnArgs) -> Result<(&CudaFunction, usize, usize)> {
        let width = match a.d {
            64 => 0,
            128 => 1,
            192 => 2,
            256 => 3,
            d => {
                return Err(Error::Internal(format!(
                    "attention over heads of {d} (the kernels take 64, 128, 192 or 256)"
                )))
            }
        };
        let group = a.n_heads / a.n_kv.max(1);
        if a.d == 128 && group.is_multiple_of(8) {
            return Ok((&self.attn_one8, 8, 256));
        }
        let per_block = (1..=4)
            .rev()
            .find(|g| group.is_multiple_of(*g))
            .unwrap_or(1);
        Ok((&self.attn_one[width][per_block - 1], per_block, 128))
    }

    /// The GPU's SMs, how many blocks of `a`'s one-token attention an SM holds at once, and
    /// how many blocks one split of a step has (one per group of query heads), both counted
    /// in blocks of 128 threads (a block of 256 counts twice).
    pub fn one_wave(&self, a: &AttnArgs) -> Result<(usize, usize, usize)> {
        let (f, per_block, threads) = self.one_kernel(a)?;
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(threads as u32, one_shared(a.d), None)
            .map_err(driver("the attention's occupancy"))?;
        let sms = self
            .stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("the SM count"))?;
        let units = threads / 128;
        Ok((
            sms.max(1) as usize,
            per_sm as usize * units,
            a.n_heads / per_block * units,
        ))
    }

    /// Attention of one token: norms and RoPE of its query heads and key, its key and value
    /// into the layer's f16 cache, then `nsplit` splits of its keys, each an equal share
    /// (partials in `part`, a counter per head in `done`), joined into `xq`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_one(
        &self,
        (q, k, v): (Ptr, Ptr, Ptr),
        (qn, kn, eps): (Ptr, Ptr, f32),
        (kc, vc): (Ptr, Ptr),
        (part, done): (Ptr, Ptr),
        xq: Ptr,
        pos: Ptr,
        ctx: usize,
        a: &AttnArgs,
        r: &RopeArgs,
        nsplit: usize,
    ) -> Result<()> {
        let (ctx, h, kv) = (ctx as i32, a.n_heads as i32, a.n_kv as i32);
        let (window, neox) = (a.window as i32, r.neox as i32);
        let (f, per_block, threads) = self.one_kernel(a)?;
        let mut l = self.stream.launch_builder(f);
        l.arg(&q).arg(&k).arg(&v).arg(&qn).arg(&kn).arg(&eps);
        l.arg(&kc)
            .arg(&vc)
            .arg(&part)
            .arg(&done)
            .arg(&xq)
            .arg(&pos)
            .arg(&ctx);
        l.arg(&h)
            .arg(&kv)
            .arg(&a.scale)
            .arg(&a.softcap)
            .arg(&window);
        l.arg(&r.theta_scale)
            .arg(&r.factors)
            .arg(&r.pos_scale)
            .arg(&neox);
        // SAFETY: as in `mmv`.
        let grid = (a.n_heads / per_block, 1, nsplit);
        unsafe { l.launch(cfg(grid, threads, one_shared(a.d))) }.map_err(driver("attn_one"))?;
        Ok(())
    }

    /// Attention of `n` prompt queries into `xq`: on the tensor cores (`flash`: f16 products
    /// summed in f32; heads of 64, 128, 192 or 256), else in llama.cpp's CPU order (any
    /// other head width too).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_prompt(
        &self,
        flash: bool,
        q: Ptr,
        (kc, vc): (Ptr, Ptr),
        xq: Ptr,
        pos: Ptr,
        ctx: usize,
        n: usize,
        a: &AttnArgs,
    ) -> Result<()> {
        let (f, grid, shared) = match (flash, a.d) {
            (true, 64 | 128 | 192 | 256) => (
                &self.attn_flash[a.d / 64 - 1],
                (a.n_heads, n.div_ceil(64), 1),
                flash_shared(a.d),
            ),
            _ => (
                &self.attn_seq,
                (a.n_heads, n.div_ceil(4), 1),
                seq_shared(a.d),
            ),
        };
        let (ctx, h, kv, d) = (ctx as i32, a.n_heads as i32, a.n_kv as i32, a.d as i32);
        let (window, scale_q, ni) = (a.window as i32, a.scale_q as i32, n as i32);
        let mut l = self.stream.launch_builder(f);
        l.arg(&q).arg(&kc).arg(&vc).arg(&xq).arg(&pos);
        l.arg(&ctx)
            .arg(&h)
            .arg(&kv)
            .arg(&d)
            .arg(&a.scale)
            .arg(&scale_q);
        l.arg(&a.softcap).arg(&window).arg(&ni);
        // SAFETY: as in `mmv`; `allow_shared` raised the limit for the CPU-order kernel's
        // chunk, and the flash kernel's tiles fit the default 48 KiB at every width.
        unsafe { l.launch(cfg(grid, 128, shared)) }.map_err(driver("prompt attention"))?;
        Ok(())
    }

    /// `xq = q8(act(g) · u)` for `n` tokens of width `f`.
    pub fn glu_q8(&self, g: Ptr, u: Ptr, xq: Ptr, n: usize, f: usize, gelu: bool) -> Result<()> {
        let (fi, act) = (f as i32, gelu as i32);
        let mut l = self.stream.launch_builder(&self.glu_q8);
        l.arg(&g).arg(&u).arg(&xq).arg(&fi).arg(&act);
        let grid = ((f / 32).div_ceil(4), n, 1);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg(grid, 128, 0)) }.map_err(driver("glu_q8"))?;
        Ok(())
    }

    /// The index of the largest of `n` floats at `x` (the lowest among equals) into the i32
    /// at `out`, through per-block partials (`part_v`, `part_i`: `n / 1024` rounded up) and a
    /// zeroed counter the kernel leaves zeroed.
    pub fn argmax(
        &self,
        x: Ptr,
        n: usize,
        (part_v, part_i, count): (Ptr, Ptr, Ptr),
        out: Ptr,
    ) -> Result<()> {
        let ni = n as i32;
        let mut l = self.stream.launch_builder(&self.argmax);
        l.arg(&x)
            .arg(&ni)
            .arg(&part_v)
            .arg(&part_i)
            .arg(&count)
            .arg(&out);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg((n.div_ceil(1024), 1, 1), 1024, 0)) }.map_err(driver("argmax"))?;
        Ok(())
    }

    /// For `n` tokens: route each through `m`'s router, run its chosen experts, and add their
    /// weighted sum to the residual rows `b.h` (`hidden` wide). One token runs a row product
    /// per chosen expert; prompts group their tokens by expert and run tiles
    /// ([`Self::moe_grouped`]).
    pub fn moe(&self, m: &MoeArgs, b: &MoeBufs, n: usize, hidden: usize) -> Result<()> {
        if m.n_exp > 1024 || m.n_used > 32 || m.n_used > m.n_exp {
            return Err(Error::Internal(format!(
                "{} experts, {} per token: the fused kernels take up to 1024 and 32, and no \
                 more per token than there are",
                m.n_exp, m.n_used
            )));
        }
        let (hd, ne, nu, f) = (hidden as i32, m.n_exp as i32, m.n_used as i32, m.ffn as i32);
        let (mode, renorm, gelu) = (m.mode, m.renorm as i32, m.gelu as i32);
        let mut l = self.stream.launch_builder(&self.moe_logits);
        l.arg(&b.x).arg(&m.router).arg(&hd).arg(&ne).arg(&b.logits);
        // SAFETY: as in `mmv`; the router holds n_exp rows of `hidden` (a multiple of 32),
        // the logits buffer n · n_exp.
        unsafe { l.launch(cfg((m.n_exp.div_ceil(4), n, 1), 128, 0)) }
            .map_err(driver("moe_logits"))?;
        let mut l = self.stream.launch_builder(&self.moe_topk);
        l.arg(&b.logits).arg(&ne).arg(&nu).arg(&mode).arg(&renorm);
        l.arg(&b.ids).arg(&b.wts);
        // SAFETY: as in `mmv`; the route buffers hold n · n_used entries.
        unsafe { l.launch(cfg((n, 1, 1), 128, 0)) }.map_err(driver("moe_topk"))?;
        if n > 1 {
            return self.moe_grouped(m, b, n, hidden);
        }
        let mut l = self.stream.launch_builder(&self.moe_glu);
        l.arg(&m.tables.0)
            .arg(&m.tables.1)
            .arg(&m.types.0)
            .arg(&m.types.1);
        l.arg(&b.ids)
            .arg(&nu)
            .arg(&b.xq)
            .arg(&hd)
            .arg(&gelu)
            .arg(&b.act);
        // SAFETY: as in `mmv`; `ffn` is a multiple of 32 and the activation buffer holds
        // n · n_used rows of it.
        unsafe { l.launch(cfg((m.ffn / 32, n * m.n_used, 1), 1024, 0)) }
            .map_err(driver("moe_glu"))?;
        let mut l = self.stream.launch_builder(&self.moe_down);
        l.arg(&m.tables.2)
            .arg(&m.types.2)
            .arg(&b.ids)
            .arg(&b.wts)
            .arg(&nu);
        l.arg(&b.act).arg(&f).arg(&hd).arg(&b.h);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg((hidden.div_ceil(4), n, 1), 128, 0)) }.map_err(driver("moe_down"))?;
        Ok(())
    }

    /// The experts of `n` routed tokens, grouped by expert: each expert's gate/up and down
    /// products over its (token, slot) pairs as 64 × 64 tiles, then each token's weighted sum.
    fn moe_grouped(&self, m: &MoeArgs, b: &MoeBufs, n: usize, hidden: usize) -> Result<()> {
        let pairs = n * m.n_used;
        let (ne, pi, cap, nu, one) = (m.n_exp as i32, pairs as i32, n as i32, m.n_used as i32, 1);
        let (counts, list) = b.groups;
        let mut l = self.stream.launch_builder(&self.moe_zero);
        l.arg(&counts).arg(&ne);
        // SAFETY: as in `mmv`; `counts` holds n_exp counters.
        unsafe { l.launch(cfg((m.n_exp.div_ceil(256), 1, 1), 256, 0)) }
            .map_err(driver("moe_zero"))?;
        let mut l = self.stream.launch_builder(&self.moe_group);
        l.arg(&b.ids).arg(&pi).arg(&cap).arg(&counts).arg(&list);
        // SAFETY: as in `mmv`; each expert's list holds `n` entries, and a token picks an
        // expert at most once.
        unsafe { l.launch(cfg((pairs.div_ceil(256), 1, 1), 256, 0)) }
            .map_err(driver("moe_group"))?;
        let (ffn, hd) = (m.ffn as i32, hidden as i32);
        let products = |tabs: (Ptr, Ptr), types: (i32, i32), rows: usize, out: (Ptr, Ptr)| {
            let (ri, div, xq, k) = match tabs.1 {
                0 => (hd, one, b.act, ffn),
                _ => (ffn, nu, b.xq, hd),
            };
            let mut l = self.stream.launch_builder(&self.mmq_moe);
            l.arg(&tabs.0)
                .arg(&tabs.1)
                .arg(&types.0)
                .arg(&types.1)
                .arg(&ri);
            l.arg(&out.0)
                .arg(&out.1)
                .arg(&counts)
                .arg(&list)
                .arg(&cap)
                .arg(&div);
            l.arg(&xq).arg(&k);
            let mats = if tabs.1 == 0 { 1 } else { 2 };
            let grid = (mats * rows.div_ceil(64), n.div_ceil(64), m.n_exp);
            // SAFETY: as in `mmv`; the outputs hold n · n_used rows of `rows`.
            unsafe { l.launch(cfg(grid, 128, 0)) }.map_err(driver("mmq_moe"))
        };
        products(
            (m.tables.0, m.tables.1),
            (m.types.0, m.types.1),
            m.ffn,
            b.gate_up,
        )?;
        self.glu_q8(b.gate_up.0, b.gate_up.1, b.act, pairs, m.ffn, m.gelu)?;
        products((m.tables.2, 0), (m.types.2, 0), hidden, (b.down, 0))?;
        let mut l = self.stream.launch_builder(&self.moe_combine);
        l.arg(&b.down).arg(&b.wts).arg(&nu).arg(&hd).arg(&b.h);
        // SAFETY: as in `mmv`.
        unsafe { l.launch(cfg((hidden.div_ceil(256), n, 1), 256, 0)) }
            .map_err(driver("moe_combine"))?;
        Ok(())
    }

    /// For `n` rows of `h`: `xq = q8(rmsnorm(h) · w)` and the f32 values into `out`.
    pub fn norm_q8_f32(
        &self,
        (h, w, xq, out): (Ptr, Ptr, Ptr, Ptr),
        n: usize,
        k: usize,
        eps: f32,
    ) -> Result<()> {
        self.launch_norm((0, 0, h, w), (xq, out), n, k, eps)
    }
}
