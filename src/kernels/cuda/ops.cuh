// The small kernels between products: embedding rows (with the first norm), RMSNorm into q8
// (with Gemma's post-norms), RoPE with the cache store for prompts, the gated activation for
// prompts, and the argmax.

#pragma once

// ---------------------------------------------------------------------------------------
// Embedding rows (dequantized) for the token ids, times `scale`. Grid: tokens; 256 threads.

// With `nw`, also q8(rmsnorm(row) · nw) into `xq` (the first block's input); `k` floats of
// dynamic shared memory.
extern "C" __global__ void embed(const uint8_t* table, int t, int row_bytes, const int* ids,
                                 float* out, int k, float scale, const float* nw, float eps,
                                 uint8_t* xq) {
    extern __shared__ float row[];
    const int tok = blockIdx.x;
    const uint8_t* src = table + (size_t)ids[tok] * row_bytes;
    double ss = 0.0;
    for (int e = threadIdx.x; e < k; e += blockDim.x) {
        float v;
        switch (t) {
            case T_Q4_0: v = dequant<T_Q4_0>(src, e); break;
            case T_Q4_1: v = dequant<T_Q4_1>(src, e); break;
            case T_Q5_0: v = dequant<T_Q5_0>(src, e); break;
            case T_Q8_0: v = dequant<T_Q8_0>(src, e); break;
            case T_Q4_K: v = dequant<T_Q4_K>(src, e); break;
            default: v = dequant<T_Q6_K>(src, e); break;
        }
        if (scale != 1.0f) v *= scale;
        out[(size_t)tok * k + e] = v;
        row[e] = v;
        ss += (double)__fmul_rn(v, v);
    }
    if (!nw) return;
    const float sc = rms_scale(block_sum_f64(ss), k, eps);
    const int lane = threadIdx.x & 31, nsub = k / QK;
    for (int b = threadIdx.x >> 5; b < nsub; b += blockDim.x >> 5) {
        const int e = b * QK + lane;
        quant_warp((row[e] * sc) * nw[e], xq + ((size_t)tok * nsub + b) * Q8_BYTES);
    }
}

// ---------------------------------------------------------------------------------------
// Norms. One block per token; 4k floats of dynamic shared memory (inputs staged together).
//
// With `t`: h += rmsnorm(t) * w_post (Gemma's post-norms). Then, with `w`:
// q8(rmsnorm(h) * w) into `xq` (the next product's input), and, with `out`, the f32 values.

extern "C" __global__ void norm_q8(const float* t, const float* w_post, float* h,
                                   const float* w, uint8_t* xq, float* out, int k, float eps) {
    extern __shared__ float buf[];  // h, w, and with t: t, w_post
    float *hb = buf, *wb = buf + k, *tb = buf + 2 * k, *pb = buf + 3 * k;
    const size_t base = (size_t)blockIdx.x * k;
    float* hr = h + base;
#pragma unroll 4
    for (int e = threadIdx.x; e < k; e += blockDim.x) {
        hb[e] = hr[e];
        if (w) wb[e] = w[e];
        if (t) {
            tb[e] = t[base + e];
            pb[e] = w_post[e];
        }
    }
    __syncthreads();
    if (t) {
        double ss = 0.0;
        for (int e = threadIdx.x; e < k; e += blockDim.x) ss += (double)__fmul_rn(tb[e], tb[e]);
        const float scale = rms_scale(block_sum_f64(ss), k, eps);
        for (int e = threadIdx.x; e < k; e += blockDim.x) {
            const float v = hb[e] + (tb[e] * scale) * pb[e];
            hb[e] = v;
            hr[e] = v;
        }
        __syncthreads();
    }
    if (!w) return;
    double ss = 0.0;
    for (int e = threadIdx.x; e < k; e += blockDim.x) ss += (double)__fmul_rn(hb[e], hb[e]);
    const float scale = rms_scale(block_sum_f64(ss), k, eps);
    for (int e = threadIdx.x; e < k; e += blockDim.x) {
        const float v = (hb[e] * scale) * wb[e];
        hb[e] = v;
        if (out) out[base + e] = v;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int nsub = k / QK;
    for (int b = threadIdx.x >> 5; b < nsub; b += nw)
        quant_warp(hb[b * QK + lane], xq + ((size_t)blockIdx.x * nsub + b) * Q8_BYTES);
}

// ---------------------------------------------------------------------------------------
// Per-head Q/K norm and RoPE; K and V go into the f16 cache at their positions.
// Grid: (tokens, n_heads + n_kv_heads); head_dim / 2 threads, one rotation pair each.
// q: [tok][n_heads][d] (rotated in place); k, v: [tok][n_kv][d];
// cache: [n_kv][ctx][d] for this layer.

extern "C" __global__ void rope_store(float* q, const float* k, const float* v,
                                      const float* qn, const float* kn, float eps,
                                      __half* kc, __half* vc, const int* pos0, int ctx,
                                      int n_heads, int n_kv, int d, float theta_scale,
                                      const float* factors, float pos_scale, int neox) {
    const int tok = blockIdx.x, head = blockIdx.y, i = threadIdx.x, half = d / 2;
    const int pos = *pos0 + tok;
    const bool is_q = head < n_heads;
    const int kvh = head - n_heads;
    const float* src = is_q ? q + ((size_t)tok * n_heads + head) * d
                            : k + ((size_t)tok * n_kv + kvh) * d;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    float x0 = src[i0], x1 = src[i1];
    const float* nw = is_q ? qn : kn;
    if (nw) {
        // blockDim.x == half; the pad to a warp multiple is done by the caller's launch.
        const double sq = (double)__fmul_rn(x0, x0) + (double)__fmul_rn(x1, x1);
        const float scale = rms_scale(block_sum_f64(sq), d, eps);
        x0 = (x0 * scale) * nw[i0];
        x1 = (x1 * scale) * nw[i1];
    }
    float y0, y1;
    rope_pair(x0, x1, i, pos, theta_scale, factors, pos_scale, y0, y1);
    if (is_q) {
        float* dst = q + ((size_t)tok * n_heads + head) * d;
        dst[i0] = y0;
        dst[i1] = y1;
    } else {
        const size_t at = ((size_t)kvh * ctx + pos) * d;
        kc[at + i0] = __float2half(y0);
        kc[at + i1] = __float2half(y1);
        const float* vs = v + ((size_t)tok * n_kv + kvh) * d;
        vc[at + i0] = __float2half(vs[i0]);
        vc[at + i1] = __float2half(vs[i1]);
    }
}

// ---------------------------------------------------------------------------------------
// act(gate) * up, quantized for the down projection. Grid: (ffn / 32 / 4, tokens); 128
// threads, a warp per 32 values. act: 0 = SiLU, 1 = GELU (tanh).

extern "C" __global__ void glu_q8(const float* g, const float* u, uint8_t* xq, int f, int act) {
    const int b = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31, tok = blockIdx.y;
    const int nsub = f / QK;
    if (b >= nsub) return;
    const size_t at = (size_t)tok * f + b * QK + lane;
    const float x = g[at];
    const float a = act == 0 ? act_silu(x) : act_gelu(x);
    quant_warp(__fmul_rn(a, u[at]), xq + ((size_t)tok * nsub + b) * Q8_BYTES);
}

// ---------------------------------------------------------------------------------------
// Index of the largest of `n` values (the lowest index among equals): each block reduces
// 1024 values into `part` (value, index); the last block (a counter, reset by it) reduces
// those into `out`. Grid: ceil(n / 1024) ≤ 1024 blocks; 1024 threads.

static __device__ __forceinline__ void arg_better(float& bv, int& bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

static __device__ void block_argmax(float& best, int& idx) {
    __shared__ float wv[32];
    __shared__ int wi[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        arg_better(best, idx, __shfl_xor_sync(0xffffffff, best, o),
                   __shfl_xor_sync(0xffffffff, idx, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) {
        wv[warp] = best;
        wi[warp] = idx;
    }
    __syncthreads();
    best = lane < nw ? wv[lane] : -INFINITY;
    idx = lane < nw ? wi[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        arg_better(best, idx, __shfl_xor_sync(0xffffffff, best, o),
                   __shfl_xor_sync(0xffffffff, idx, o));
}

extern "C" __global__ void __launch_bounds__(1024)
    argmax(const float* x, int n, float* part_v, int* part_i, unsigned int* count, int* out) {
    __shared__ bool last;
    const int i = blockIdx.x * 1024 + threadIdx.x;
    float best = i < n ? x[i] : -INFINITY;
    int idx = i < n ? i : 0x7fffffff;
    block_argmax(best, idx);
    if (threadIdx.x == 0) {
        part_v[blockIdx.x] = best;
        part_i[blockIdx.x] = idx;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(count, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int b = threadIdx.x;
    best = b < (int)gridDim.x ? __ldcg(part_v + b) : -INFINITY;
    idx = b < (int)gridDim.x ? __ldcg(part_i + b) : 0x7fffffff;
    block_argmax(best, idx);
    if (threadIdx.x == 0) {
        *out = idx;
        *count = 0;
    }
}
