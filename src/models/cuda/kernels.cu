// mlcli's CUDA kernels for the fused decoder (src/models/cuda/): quantized matrix-vector
// products over 8-bit activations, RMSNorm, RoPE with the KV-cache store, split-key
// attention, the gated activation and the argmax. Compiled to PTX by build.rs when the
// `cuda` feature is on. Every kernel takes plain device pointers and reads the position and
// token ids from device memory, so a decode step can be captured once as a CUDA graph.
//
// Activations for products are quantized per 32 values ("q8" blocks below): an f32 scale d,
// an f32 sum s = d * sum(q), then 32 int8 values. The scale and the sum are rounded to f16
// as ggml's CPU code stores them, so the integer sums, and nearly the products, equal the
// CPU backend's.

#include <cuda_fp16.h>
#include <stdint.h>

#define QK 32
#define Q8_BYTES 40

// ggml type ids.
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q6_K 14

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

static __device__ __forceinline__ int warp_isum(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
static __device__ float block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0f;
    return warp_sum(v);
}

static __device__ __forceinline__ float f16r(float x) { return __half2float(__float2half(x)); }

static __device__ __forceinline__ float ld_half(const uint8_t* p) {
    return __half2float(*(const __half*)p);
}

// 32-bit loads from 2-byte and 4-byte aligned addresses.
static __device__ __forceinline__ int ld_b2(const uint8_t* p) {
    const uint16_t* q = (const uint16_t*)p;
    return (int)((uint32_t)q[0] | ((uint32_t)q[1] << 16));
}
static __device__ __forceinline__ int ld_b4(const uint8_t* p) { return *(const int*)p; }

// Quantizes the 32 values of a warp (one per lane) into the q8 block at `dst`.
static __device__ __forceinline__ void quant_warp(float x, uint8_t* dst) {
    const int lane = threadIdx.x & 31;
    const float amax = warp_max(fabsf(x));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int q = __float2int_rn(x * id);
    const int isum = warp_isum(q);
    const float d = f16r(amax / 127.0f);
    dst[8 + lane] = (uint8_t)(int8_t)q;
    if (lane == 0) {
        ((float*)dst)[0] = d;
        ((float*)dst)[1] = f16r(d * (float)isum);
    }
}

// ggml's RoPE angle of pair `i` at `pos`: the position times theta_scale^i as a running
// product in f32, divided by the pair's factor, times the position scale.
static __device__ __forceinline__ void rope_cs(int i, int pos, float theta_scale,
                                               const float* factors, float pos_scale, float& c,
                                               float& s) {
    float theta = (float)pos;
    for (int j = 0; j < i; j++) theta *= theta_scale;
    if (factors) theta = theta / factors[i];
    theta = pos_scale * theta;
    c = cosf(theta);
    s = sinf(theta);
}

static __device__ __forceinline__ void rope_pair(float x0, float x1, int i, int pos,
                                                 float theta_scale, const float* factors,
                                                 float pos_scale, float& y0, float& y1) {
    float c, s;
    rope_cs(i, pos, theta_scale, factors, pos_scale, c, s);
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
}

// ---------------------------------------------------------------------------------------
// Weight sub-blocks of 32 values, unpacked to 8 ints of int8 lanes (`v`) and their scales.

struct Sub {
    int v[8];
    float a;   // multiplies d_x * sum(v * x)
    float b;   // multiplies s_x (the activation block's sum)
    float a2;  // Q6_K: the second half's scale (v[4..8])
};

template <int T>
static __device__ __forceinline__ void load_sub(const uint8_t* row, int b, Sub& s) {
    if (T == T_Q4_0) {
        const uint8_t* blk = row + b * 18;
        const float d = ld_half(blk);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int q = ld_b2(blk + 2 + 4 * i);
            s.v[i] = q & 0x0F0F0F0F;
            s.v[i + 4] = (q >> 4) & 0x0F0F0F0F;
        }
        s.a = d;
        s.b = -8.0f * d;
    } else if (T == T_Q4_1) {
        const uint8_t* blk = row + b * 20;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int q = ld_b4(blk + 4 + 4 * i);
            s.v[i] = q & 0x0F0F0F0F;
            s.v[i + 4] = (q >> 4) & 0x0F0F0F0F;
        }
        s.a = ld_half(blk);
        s.b = ld_half(blk + 2);
    } else if (T == T_Q5_0) {
        const uint8_t* blk = row + b * 22;
        const float d = ld_half(blk);
        const uint32_t qh = (uint32_t)ld_b2(blk + 2);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int q = ld_b2(blk + 6 + 4 * i);
            int lo = q & 0x0F0F0F0F, hi = (q >> 4) & 0x0F0F0F0F;
            const uint32_t l = qh >> (4 * i), h = qh >> (4 * i + 16);
            lo |= ((l & 1) << 4) | ((l & 2) << 11) | ((l & 4) << 18) | ((l & 8) << 25);
            hi |= ((h & 1) << 4) | ((h & 2) << 11) | ((h & 4) << 18) | ((h & 8) << 25);
            s.v[i] = lo;
            s.v[i + 4] = hi;
        }
        s.a = d;
        s.b = -16.0f * d;
    } else if (T == T_Q8_0) {
        const uint8_t* blk = row + b * 34;
#pragma unroll
        for (int i = 0; i < 8; i++) s.v[i] = ld_b2(blk + 2 + 4 * i);
        s.a = ld_half(blk);
        s.b = 0.0f;
    } else if (T == T_Q4_K) {
        const uint8_t* blk = row + (b >> 3) * 144;
        const int j = b & 7;
        const float d = ld_half(blk), dmin = ld_half(blk + 2);
        const uint8_t* sc = blk + 4;
        int scale, mn;
        if (j < 4) {
            scale = sc[j] & 63;
            mn = sc[j + 4] & 63;
        } else {
            scale = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        const uint8_t* qs = blk + 16 + 32 * (j >> 1);
        const int shift = (j & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; i++) s.v[i] = (ld_b4(qs + 4 * i) >> shift) & 0x0F0F0F0F;
        s.a = d * (float)scale;
        s.b = -dmin * (float)mn;
    } else if (T == T_Q6_K) {
        const uint8_t* blk = row + (b >> 3) * 210;
        const int j = b & 7, n = j >> 2, t = j & 3;
        const uint8_t* ql = blk + n * 64 + (t & 1) * 32;
        const uint8_t* qh = blk + 128 + n * 32;
        const int8_t* sc = (const int8_t*)(blk + 192 + n * 8 + 2 * t);
        const float d = ld_half(blk + 208);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int l = ld_b2(ql + 4 * i);
            const int lo = (t >> 1) ? ((l >> 4) & 0x0F0F0F0F) : (l & 0x0F0F0F0F);
            const int h = ((ld_b2(qh + 4 * i) >> (2 * t)) & 0x03030303) << 4;
            s.v[i] = __vsubss4(lo | h, 0x20202020);
        }
        s.a = d * (float)sc[0];
        s.a2 = d * (float)sc[1];
        s.b = 0.0f;
    }
}

template <int T>
static __device__ __forceinline__ float dot_sub(const Sub& s, const uint8_t* xb) {
    const float d = ((const float*)xb)[0], sx = ((const float*)xb)[1];
    const int* x = (const int*)(xb + 8);
    if (T == T_Q6_K) {
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) s0 = __dp4a(s.v[i], x[i], s0);
#pragma unroll
        for (int i = 4; i < 8; i++) s1 = __dp4a(s.v[i], x[i], s1);
        return d * (s.a * (float)s0 + s.a2 * (float)s1);
    }
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) sum = __dp4a(s.v[i], x[i], sum);
    return s.a * d * (float)sum + s.b * sx;
}

static __device__ __forceinline__ int row_bytes(int t, int nsub) {
    switch (t) {
        case T_Q4_0: return nsub * 18;
        case T_Q4_1: return nsub * 20;
        case T_Q5_0: return nsub * 22;
        case T_Q8_0: return nsub * 34;
        case T_Q4_K: return nsub / 8 * 144;
        default: return nsub / 8 * 210;
    }
}

// One warp's dot product of a weight row with one token's q8 input: lanes take the row's
// 32-value sub-blocks in turn. Every lane gets the sum.
template <int T>
static __device__ __forceinline__ float row_dot(const uint8_t* row, int nsub, const uint8_t* xq) {
    float acc = 0.0f;
    for (int b = threadIdx.x & 31; b < nsub; b += 32) {
        Sub s;
        load_sub<T>(row, b, s);
        acc += dot_sub<T>(s, xq + b * Q8_BYTES);
    }
    return warp_sum(acc);
}

static __device__ float dot_row(const uint8_t* w, int t, int row, int k, const uint8_t* xq) {
    const int nsub = k / QK;
    const uint8_t* r = w + (size_t)row * row_bytes(t, nsub);
    switch (t) {
        case T_Q4_0: return row_dot<T_Q4_0>(r, nsub, xq);
        case T_Q4_1: return row_dot<T_Q4_1>(r, nsub, xq);
        case T_Q5_0: return row_dot<T_Q5_0>(r, nsub, xq);
        case T_Q8_0: return row_dot<T_Q8_0>(r, nsub, xq);
        case T_Q4_K: return row_dot<T_Q4_K>(r, nsub, xq);
        default: return row_dot<T_Q6_K>(r, nsub, xq);
    }
}

// One-token products of up to three matrices sharing one q8 input (Q/K/V, gate/up), each with
// its own weight type: y_m[row] = W_m[row] · x (+ add0[row] for matrix 0), soft-capped when
// `cap` > 0. A warp per row; grid: rows / 4; 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    mmv(const uint8_t* w0, const uint8_t* w1, const uint8_t* w2, int t0, int t1, int t2, int r0,
        int r1, int r2, float* y0, float* y1, float* y2, const float* add0, const uint8_t* xq,
        int k, float cap) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row = blockIdx.x * 4 + warp;
    const uint8_t* w;
    int t;
    float* y;
    const float* add = nullptr;
    if (row < r0) {
        w = w0; t = t0; y = y0; add = add0;
    } else if (row < r0 + r1) {
        row -= r0; w = w1; t = t1; y = y1;
    } else if (row < r0 + r1 + r2) {
        row -= r0 + r1; w = w2; t = t2; y = y2;
    } else {
        return;
    }
    float o = dot_row(w, t, row, k, xq);
    if (lane == 0) {
        if (add) o += add[row];
        if (cap > 0.0f) o = cap * tanhf(o / cap);
        y[row] = o;
    }
}

// Both rows `row` of two matrices of one type against the same input, their loads together.
template <int T>
static __device__ __forceinline__ float2 row_dot2(const uint8_t* ra, const uint8_t* rb, int nsub,
                                                  const uint8_t* xq) {
    float a = 0.0f, b = 0.0f;
    for (int sb = threadIdx.x & 31; sb < nsub; sb += 32) {
        Sub sa, sbb;
        load_sub<T>(ra, sb, sa);
        load_sub<T>(rb, sb, sbb);
        a += dot_sub<T>(sa, xq + sb * Q8_BYTES);
        b += dot_sub<T>(sbb, xq + sb * Q8_BYTES);
    }
    return make_float2(warp_sum(a), warp_sum(b));
}

// One token's gate and up rows and the gated activation, quantized for the down projection
// into `out` (another buffer than the input): a block per 32 rows, a warp per row pair, so
// each block holds a whole q8 block. Grid: ffn / 32; 1024 threads.
extern "C" __global__ void __launch_bounds__(1024)
    mmv_glu(const uint8_t* wg, const uint8_t* wu, int tg, int tu, const uint8_t* xq, int k,
            int gelu, uint8_t* out) {
    __shared__ float g[32], u[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 32 + warp;
    const int nsub = k / QK;
    float2 gu;
    if (tg == tu) {
        const int bytes = row_bytes(tg, nsub);
        const uint8_t *ra = wg + (size_t)row * bytes, *rb = wu + (size_t)row * bytes;
        switch (tg) {
            case T_Q4_0: gu = row_dot2<T_Q4_0>(ra, rb, nsub, xq); break;
            case T_Q4_1: gu = row_dot2<T_Q4_1>(ra, rb, nsub, xq); break;
            case T_Q5_0: gu = row_dot2<T_Q5_0>(ra, rb, nsub, xq); break;
            case T_Q8_0: gu = row_dot2<T_Q8_0>(ra, rb, nsub, xq); break;
            case T_Q4_K: gu = row_dot2<T_Q4_K>(ra, rb, nsub, xq); break;
            default: gu = row_dot2<T_Q6_K>(ra, rb, nsub, xq); break;
        }
    } else {
        gu = make_float2(dot_row(wg, tg, row, k, xq), dot_row(wu, tu, row, k, xq));
    }
    if (lane == 0) {
        g[warp] = gu.x;
        u[warp] = gu.y;
    }
    __syncthreads();
    if (warp == 0) {
        const float x = g[lane];
        const float act = gelu
            ? 0.5f * x * (1.0f + tanhf(0.7978845608f * x * (1.0f + 0.044715f * x * x)))
            : x / (1.0f + expf(-x));
        quant_warp(act * u[lane], out + (size_t)blockIdx.x * Q8_BYTES);
    }
}


// ---------------------------------------------------------------------------------------
// The same products for prompts: a block computes a tile of 64 rows × 64 tokens from shared
// memory, so every unpacked weight and every activation block loaded is used 64 times.
// Grid: x over 64-row tiles of all matrices, y over 64-token groups; 128 threads.

#define MQ_R 64
#define MQ_T 64
#define MQ_KB 4


// Loads the unpacked sub-block `b` of row `r` (zeros past the matrix) into shared memory.
static __device__ __forceinline__ void stage_sub(const uint8_t* w, int t, int bytes, int rows,
                                                 int row, int b, int nsub, int* v, float* a,
                                                 float* a2, float* bb) {
    Sub s;
    if (b < nsub && row < rows) {
        const uint8_t* wr = w + (size_t)row * bytes;
        switch (t) {
            case T_Q4_0: load_sub<T_Q4_0>(wr, b, s); s.a2 = s.a; break;
            case T_Q4_1: load_sub<T_Q4_1>(wr, b, s); s.a2 = s.a; break;
            case T_Q5_0: load_sub<T_Q5_0>(wr, b, s); s.a2 = s.a; break;
            case T_Q8_0: load_sub<T_Q8_0>(wr, b, s); s.a2 = s.a; break;
            case T_Q4_K: load_sub<T_Q4_K>(wr, b, s); s.a2 = s.a; break;
            default: load_sub<T_Q6_K>(wr, b, s); break;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) s.v[i] = 0;
        s.a = s.a2 = s.b = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = s.v[i];
    *a = s.a;
    *a2 = s.a2;
    *bb = s.b;
}

// Loads the q8 blocks b0.. b0 + KB of tokens tok0.. tok0 + T into shared memory (zeros past
// the ends), as 8-byte loads all issued before any is used.
template <int KB, int T, int S>
static __device__ __forceinline__ void stage_x(const uint8_t* xq, int b0, int nsub, int tok0,
                                               int ntok, int (*xv)[T][S], float (*xd)[T],
                                               float (*xs)[T]) {
    constexpr int N = KB * T * 5, PER = N / 128;
    int2 val[PER];
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int e = threadIdx.x + 128 * u, kb = e / (T * 5), rem = e % (T * 5);
        const int tk = rem / 5, w2 = rem % 5, b = b0 + kb, tok = tok0 + tk;
        val[u] = make_int2(0, 0);
        if (b < nsub && tok < ntok)
            val[u] = ((const int2*)(xq + ((size_t)tok * nsub + b) * Q8_BYTES))[w2];
    }
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int e = threadIdx.x + 128 * u, kb = e / (T * 5), rem = e % (T * 5);
        const int tk = rem / 5, w2 = rem % 5;
        if (w2 == 0) {
            xd[kb][tk] = __int_as_float(val[u].x);
            xs[kb][tk] = __int_as_float(val[u].y);
        } else {
            xv[kb][tk][2 * w2 - 2] = val[u].x;
            xv[kb][tk][2 * w2 - 1] = val[u].y;
        }
    }
}

#if __CUDA_ARCH__ >= 800
// Tensor-core form (sm_80+): a block computes 64 rows × 64 tokens, each warp 16 rows × 64
// tokens with int8 mma.m16n8k16 (one per 16 values, so each sub-block's two halves keep
// their integer sums apart for Q6_K's two scales), then scales the sums in f32.
#define TC_R 64
#define TC_T 64
#define TC_KB 4
#define TC_S 12  // ints per staged row: 8 used, padded so fragment loads avoid bank conflicts

static __device__ __forceinline__ void mma_s8(int (&c)[4], int a0, int a1, int b0) {
    c[0] = c[1] = c[2] = c[3] = 0;
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
}

extern "C" __global__ void __launch_bounds__(128)
    mmq(const uint8_t* w0, const uint8_t* w1, const uint8_t* w2, int t0, int t1, int t2, int r0,
        int r1, int r2, float* y0, float* y1, float* y2, const float* add0, const uint8_t* xq,
        int k, int ntok, float cap) {
    __shared__ int wv[TC_KB][TC_R][TC_S];
    __shared__ float wa[TC_KB][TC_R], wa2[TC_KB][TC_R], wb[TC_KB][TC_R];
    __shared__ int xv[TC_KB][TC_T][TC_S];
    __shared__ float xd[TC_KB][TC_T], xs[TC_KB][TC_T];
    const int n0 = (r0 + TC_R - 1) / TC_R, n1 = (r1 + TC_R - 1) / TC_R;
    int tile = blockIdx.x;
    const uint8_t* w;
    int t, rows;
    float* y;
    const float* add = nullptr;
    if (tile < n0) {
        w = w0; t = t0; rows = r0; y = y0; add = add0;
    } else if (tile < n0 + n1) {
        tile -= n0; w = w1; t = t1; rows = r1; y = y1;
    } else {
        tile -= n0 + n1; w = w2; t = t2; rows = r2; y = y2;
    }
    const int row0 = tile * TC_R, tok0 = blockIdx.y * TC_T;
    const int nsub = k / QK, bytes = row_bytes(t, nsub);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int b0 = 0; b0 < nsub; b0 += TC_KB) {
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int e = tid + 128 * u, kb = e >> 6, r = e & 63;
            stage_sub(w, t, bytes, rows, row0 + r, b0 + kb, nsub, wv[kb][r], &wa[kb][r],
                            &wa2[kb][r], &wb[kb][r]);
        }
        stage_x<TC_KB, TC_T, TC_S>(xq, b0, nsub, tok0, ntok, xv, xd, xs);
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < TC_KB; kb++) {
            const int ra = warp * 16 + g, rb = ra + 8;
            const int a00 = wv[kb][ra][tg], a01 = wv[kb][rb][tg];
            const int a10 = wv[kb][ra][4 + tg], a11 = wv[kb][rb][4 + tg];
            const float fa[2] = {wa[kb][ra], wa[kb][rb]}, fa2[2] = {wa2[kb][ra], wa2[kb][rb]};
            const float fb[2] = {wb[kb][ra], wb[kb][rb]};
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                const int tk = nt * 8 + g;
                int c0[4], c1[4];
                mma_s8(c0, a00, a01, xv[kb][tk][tg]);
                mma_s8(c1, a10, a11, xv[kb][tk][4 + tg]);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int hr = e >> 1, col = nt * 8 + 2 * tg + (e & 1);
                    acc[nt][e] += xd[kb][col] * (fa[hr] * (float)c0[e] + fa2[hr] * (float)c1[e]) +
                                  fb[hr] * xs[kb][col];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int row = row0 + warp * 16 + g + 8 * (e >> 1);
            const int tok = tok0 + nt * 8 + 2 * tg + (e & 1);
            if (row >= rows || tok >= ntok) continue;
            const size_t at = (size_t)tok * rows + row;
            float o = acc[nt][e];
            if (add) o += add[at];
            if (cap > 0.0f) o = cap * tanhf(o / cap);
            y[at] = o;
        }
    }
}
#else
extern "C" __global__ void __launch_bounds__(128)
    mmq(const uint8_t* w0, const uint8_t* w1, const uint8_t* w2, int t0, int t1, int t2, int r0,
        int r1, int r2, float* y0, float* y1, float* y2, const float* add0, const uint8_t* xq,
        int k, int ntok, float cap) {
    __shared__ int wv[MQ_KB][MQ_R][8];
    __shared__ float wa[MQ_KB][MQ_R], wa2[MQ_KB][MQ_R], wb[MQ_KB][MQ_R];
    __shared__ int xv[MQ_KB][MQ_T][8];
    __shared__ float xd[MQ_KB][MQ_T], xs[MQ_KB][MQ_T];
    const int n0 = (r0 + MQ_R - 1) / MQ_R, n1 = (r1 + MQ_R - 1) / MQ_R;
    int tile = blockIdx.x;
    const uint8_t* w;
    int t, rows;
    float* y;
    const float* add = nullptr;
    if (tile < n0) {
        w = w0; t = t0; rows = r0; y = y0; add = add0;
    } else if (tile < n0 + n1) {
        tile -= n0; w = w1; t = t1; rows = r1; y = y1;
    } else {
        tile -= n0 + n1; w = w2; t = t2; rows = r2; y = y2;
    }
    const int row0 = tile * MQ_R, tok0 = blockIdx.y * MQ_T;
    const int nsub = k / QK, bytes = row_bytes(t, nsub);
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int b0 = 0; b0 < nsub; b0 += MQ_KB) {
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int e = tid + 128 * u, kb = e >> 6, r = e & 63;
            stage_sub(w, t, bytes, rows, row0 + r, b0 + kb, nsub, wv[kb][r], &wa[kb][r],
                         &wa2[kb][r], &wb[kb][r]);
        }
        stage_x<MQ_KB, MQ_T, 8>(xq, b0, nsub, tok0, ntok, xv, xd, xs);
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < MQ_KB; kb++) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int r = ty + 8 * i;
                int v[8];
#pragma unroll
                for (int q = 0; q < 8; q++) v[q] = wv[kb][r][q];
                const float a = wa[kb][r], a2 = wa2[kb][r], bb = wb[kb][r];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int tk = tx + 16 * j;
                    int s0 = 0, s1 = 0;
#pragma unroll
                    for (int q = 0; q < 4; q++) s0 = __dp4a(v[q], xv[kb][tk][q], s0);
#pragma unroll
                    for (int q = 4; q < 8; q++) s1 = __dp4a(v[q], xv[kb][tk][q], s1);
                    acc[i][j] += xd[kb][tk] * (a * (float)s0 + a2 * (float)s1) + bb * xs[kb][tk];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int row = row0 + ty + 8 * i;
        if (row >= rows) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int tok = tok0 + tx + 16 * j;
            if (tok >= ntok) continue;
            const size_t at = (size_t)tok * rows + row;
            float o = acc[i][j];
            if (add) o += add[at];
            if (cap > 0.0f) o = cap * tanhf(o / cap);
            y[at] = o;
        }
    }
}

#endif

// ---------------------------------------------------------------------------------------
// Embedding rows (dequantized) for the token ids, times `scale`. Grid: tokens; 256 threads.

template <int T>
static __device__ float dequant(const uint8_t* row, int e) {
    const int b = e / QK, i = e % QK;
    Sub s;
    load_sub<T>(row, b, s);
    const int word = s.v[i / 4];
    const int q = (int)(int8_t)((word >> (8 * (i % 4))) & 0xFF);
    if (T == T_Q6_K) return (i < 16 ? s.a : s.a2) * (float)q;
    // b·sum(x) over a one-hot x is b; for Q4_1 the minimum, for Q4_0/Q5_0/Q4_K the offset.
    return s.a * (float)q + s.b;
}

// With `nw`, also q8(rmsnorm(row) · nw) into `xq` (the first block's input); `k` floats of
// dynamic shared memory.
extern "C" __global__ void embed(const uint8_t* table, int t, int row_bytes, const int* ids,
                                 float* out, int k, float scale, const float* nw, float eps,
                                 uint8_t* xq) {
    extern __shared__ float row[];
    const int tok = blockIdx.x;
    const uint8_t* src = table + (size_t)ids[tok] * row_bytes;
    float ss = 0.0f;
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
        ss += v * v;
    }
    if (!nw) return;
    const float sc = 1.0f / sqrtf(block_sum(ss) / (float)k + eps);
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
        float ss = 0.0f;
        for (int e = threadIdx.x; e < k; e += blockDim.x) ss += tb[e] * tb[e];
        const float scale = 1.0f / sqrtf(block_sum(ss) / (float)k + eps);
        for (int e = threadIdx.x; e < k; e += blockDim.x) {
            const float v = hb[e] + (tb[e] * scale) * pb[e];
            hb[e] = v;
            hr[e] = v;
        }
        __syncthreads();
    }
    if (!w) return;
    float ss = 0.0f;
    for (int e = threadIdx.x; e < k; e += blockDim.x) ss += hb[e] * hb[e];
    const float scale = 1.0f / sqrtf(block_sum(ss) / (float)k + eps);
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
        const float scale = 1.0f / sqrtf(block_sum(x0 * x0 + x1 * x1) / (float)d + eps);
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
// Attention of one token, split over the keys: grid (n_heads, 1, splits), 128 threads. Each
// block first applies the per-head norm and RoPE to its query head; the block whose split
// holds the token's own position does the same to the token's key, stores key and value in
// the f16 cache and uses them from shared memory (blocks of other query heads of the same KV
// head write the same bytes). Split s of the query at position p covers keys
// [first + s*chunk, min(first + (s+1)*chunk, p + 1)), `first` where the window starts. A warp
// takes 32 keys at a time, a key per lane for the scores and the online softmax, then the
// values key by key with the head's dimensions across lanes. The partial (max, sum, d values)
// goes to `part`; the last split of a head to finish (a counter per head, reset by it) joins
// them and writes the head's part of the output projection's q8 input.

#define ATT_WARPS 4
#define MAX_DPL 8  // head_dim / 32, up to 256
#define MAX_SPLITS 32


extern "C" __global__ void __launch_bounds__(128)
    attn_one(const float* q, const float* k, const float* v, const float* qn, const float* kn,
             float eps, __half* kc, __half* vc, float* part, unsigned int* done, uint8_t* xq,
             const int* pos0, int ctx, int n_heads, int n_kv, int d, float scale,
             float softcap, int window, int chunk, float theta_scale, const float* factors,
             float pos_scale, int neox) {
    extern __shared__ __align__(16) unsigned char vstage[];  // 4 warps × 32 rows × d halves
    __shared__ float qs[256];
    __shared__ __align__(16) __half kcur[256];
    __shared__ __align__(16) __half vcur[256];
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][32 * MAX_DPL];
    __shared__ float fs[MAX_SPLITS], y[32 * MAX_DPL];
    __shared__ bool last;
    const int head = blockIdx.x, split = blockIdx.z, nsplit = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int p = *pos0;
    const int first = window > 0 ? max(0, p + 1 - window) : 0;
    const int k0 = first + split * chunk, k1 = min(first + (split + 1) * chunk, p + 1);
    const int kvh = head / (n_heads / n_kv);
    const int dpl = d / 32, half = d / 2;
    __half* kb = kc + (size_t)kvh * ctx * d;
    __half* vb = vc + (size_t)kvh * ctx * d;
    const bool own = k0 <= p && p < k1;
    // 1. The query head and, where this split holds the token's position, its key and value:
    //    all loads first, then the per-head norms, then RoPE with angles shared by Q and K.
    float qx[2][2], kx[2][2], vv[2];
    float qss = 0.0f, kss = 0.0f;
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = threadIdx.x + 128 * u;
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const bool in = i < half;
        qx[u][0] = in ? q[(size_t)head * d + i0] : 0.0f;
        qx[u][1] = in ? q[(size_t)head * d + i1] : 0.0f;
        kx[u][0] = in && own ? k[(size_t)kvh * d + i0] : 0.0f;
        kx[u][1] = in && own ? k[(size_t)kvh * d + i1] : 0.0f;
        const int e = threadIdx.x + 128 * u;
        vv[u] = own && e < d ? v[(size_t)kvh * d + e] : 0.0f;
        qss += qx[u][0] * qx[u][0] + qx[u][1] * qx[u][1];
        kss += kx[u][0] * kx[u][0] + kx[u][1] * kx[u][1];
    }
    const float qsc = qn ? 1.0f / sqrtf(block_sum(qss) / (float)d + eps) : 1.0f;
    const float ksc = own && kn ? 1.0f / sqrtf(block_sum(kss) / (float)d + eps) : 1.0f;
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = threadIdx.x + 128 * u;
        if (i < half) {
            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float c, sn;
            rope_cs(i, p, theta_scale, factors, pos_scale, c, sn);
            float x0 = qx[u][0], x1 = qx[u][1];
            if (qn) {
                x0 = (x0 * qsc) * qn[i0];
                x1 = (x1 * qsc) * qn[i1];
            }
            qs[i0] = x0 * c - x1 * sn;
            qs[i1] = x0 * sn + x1 * c;
            if (own) {
                float z0 = kx[u][0], z1 = kx[u][1];
                if (kn) {
                    z0 = (z0 * ksc) * kn[i0];
                    z1 = (z1 * ksc) * kn[i1];
                }
                const __half h0 = __float2half(z0 * c - z1 * sn), h1 = __float2half(z0 * sn + z1 * c);
                kcur[i0] = h0;
                kcur[i1] = h1;
                kb[(size_t)p * d + i0] = h0;
                kb[(size_t)p * d + i1] = h1;
            }
        }
        const int e = threadIdx.x + 128 * u;
        if (own && e < d) {
            const __half vh = __float2half(vv[u]);
            vcur[e] = vh;
            vb[(size_t)p * d + e] = vh;
        }
    }
    __syncthreads();
    // 2. Scores a key per lane, 32 keys at a time per warp; values key by key.
    float acc[MAX_DPL];
#pragma unroll
    for (int j = 0; j < MAX_DPL; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int g = k0 + 32 * warp; g < k1; g += 32 * ATT_WARPS) {
        const int key = g + lane;
        float s = -INFINITY;
        if (key < k1) {
            // 16-byte loads, all in flight together.
            const uint4* kr = (const uint4*)(key == p ? kcur : kb + (size_t)key * d);
            float a = 0.0f;
#pragma unroll 8
            for (int e8 = 0; e8 < d / 8; e8++) {
                const uint4 raw = kr[e8];
                const __half2* h2 = (const __half2*)&raw;
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const float2 kf = __half22float2(h2[u]);
                    a = fmaf(qs[8 * e8 + 2 * u], kf.x, a);
                    a = fmaf(qs[8 * e8 + 2 * u + 1], kf.y, a);
                }
            }
            s = a * scale;
            if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        }
        const float mn = fmaxf(m, warp_max(s));
        const float corr = expf(m - mn);
        const float pk = key < k1 ? expf(s - mn) : 0.0f;
        l = l * corr + warp_sum(pk);
#pragma unroll
        for (int j = 0; j < MAX_DPL; j++) acc[j] *= corr;
        // The group's value rows into this warp's shared memory, 16-byte loads in flight
        // together, then the weighted sum from there.
        const int nk = min(32, k1 - g), h8 = d / 8;
        uint4* vw = (uint4*)vstage + (size_t)warp * 32 * h8;
#pragma unroll 8
        for (int e = lane; e < nk * h8; e += 32) {
            const int row = e / h8, c8 = e % h8, kj = g + row;
            vw[e] = kj == p ? ((const uint4*)vcur)[c8] : ((const uint4*)(vb + (size_t)kj * d))[c8];
        }
        __syncwarp();
        const __half* vrows = (const __half*)vw;
        for (int jj = 0; jj < nk; jj++) {
            const float pj = __shfl_sync(0xffffffff, pk, jj);
#pragma unroll
            for (int j = 0; j < MAX_DPL; j++)
                if (j < dpl) acc[j] = fmaf(pj, __half2float(vrows[jj * d + lane + 32 * j]), acc[j]);
        }
        __syncwarp();
        m = mn;
    }
    // 3. This split's partial (with one split, the result).
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < MAX_DPL; j++)
        if (j < dpl) sacc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
    if (nsplit == 1) {
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                if (sm[w] != -INFINITY) a += sacc[w][e] * expf(sm[w] - M);
            y[e] = a / L;
        }
        __syncthreads();
        for (int sb = warp; sb < d / QK; sb += ATT_WARPS)
            quant_warp(y[sb * QK + lane], xq + ((size_t)head * d / QK + sb) * Q8_BYTES);
        return;
    }
    float* out = part + ((size_t)head * nsplit + split) * (d + 2);
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sm[w] != -INFINITY) a += sacc[w][e] * expf(sm[w] - M);
        out[2 + e] = a;
    }
    if (threadIdx.x == 0) {
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
        out[0] = M;
        out[1] = L;
    }
    // 4. The last split of this head joins them all.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&done[head], 1u) == (unsigned)(nsplit - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* pp = part + (size_t)head * nsplit * (d + 2);
    if (threadIdx.x < nsplit) fs[threadIdx.x] = __ldcg(pp + threadIdx.x * (d + 2));
    __syncthreads();
    float MM = -INFINITY;
    for (int sp = 0; sp < nsplit; sp++) MM = fmaxf(MM, fs[sp]);
    __syncthreads();
    if (threadIdx.x < nsplit) {
        const float ms = fs[threadIdx.x];
        fs[threadIdx.x] = ms == -INFINITY ? 0.0f : expf(ms - MM);
    }
    __syncthreads();
    float L = 0.0f;
    for (int sp = 0; sp < nsplit; sp++)
        if (fs[sp] != 0.0f) L += __ldcg(pp + sp * (d + 2) + 1) * fs[sp];
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float a = 0.0f;
        for (int sp = 0; sp < nsplit; sp++)
            if (fs[sp] != 0.0f) a += __ldcg(pp + sp * (d + 2) + 2 + e) * fs[sp];
        y[e] = L > 0.0f ? a / L : 0.0f;
    }
    if (threadIdx.x == 0) done[head] = 0;
    __syncthreads();
    for (int sb = warp; sb < d / QK; sb += ATT_WARPS)
        quant_warp(y[sb * QK + lane], xq + ((size_t)head * d / QK + sb) * Q8_BYTES);
}

// Attention for prompts in llama.cpp's CPU order, so that prompt logits (the first step's
// above all) come out as the CPU build's: per query, the scores in key order (Q rounded to
// f16, each dot product summed as ggml's AVX-512 `ggml_vec_dot_f16` sums it: 64 lanes fused,
// folded 0+2, 1+3, 0+1, then halves 8, 4, 2, 1), ggml's running maximum, and the value sum
// held in f16 with one rounding per multiply-add and rescale. One warp per (head, query):
// scores for 256 keys at a time in parallel (a thread per key), then the exponents, then the
// value sum key by key with each lane holding head_dim / 32 dimensions. Writes the q8 input
// of the output projection. Grid: (n_heads, ceil(tokens / 4)); 128 threads.

// Shared memory: the chunk's K rows (d + 2 halves apart, so a thread per row reads without
// bank conflicts) and V rows, the four queries, and per warp the chunk's exponents and flags.
static __host__ __device__ int seq_chunk(int d) { return 8192 / d; }

extern "C" __global__ void __launch_bounds__(128)
    attn_seq(const float* q, const __half* kc, const __half* vc, uint8_t* xq, const int* pos0,
             int ctx, int n_heads, int n_kv, int d, float scale, int scale_q, float softcap,
             int window, int ntok) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int ck = seq_chunk(d), kst = d + 2;
    __half* ks = (__half*)smem;
    __half* vs = (__half*)(smem + ((ck * kst * 2 + 15) & ~15));
    float* qsm = (float*)(vs + ck * d);
    float* argb = qsm + 4 * d;
    unsigned char* rscb = (unsigned char*)(argb + 4 * ck);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int head = blockIdx.x, tokb = blockIdx.y * 4, tok = tokb + warp;
    const bool active = tok < ntok;
    const int p = *pos0 + tok;
    const int first = window > 0 ? max(0, p + 1 - window) : 0;
    const int p_lo = *pos0 + tokb, p_hi = *pos0 + min(tokb + 3, ntok - 1);
    const int kfirst = window > 0 ? max(0, p_lo + 1 - window) : 0;
    const int kvh = head / (n_heads / n_kv);
    float* qw = qsm + warp * d;
    float* arg = argb + warp * ck;
    unsigned char* rsc = rscb + warp * ck;
    float sc = scale;
    if (active) {
        const float* qr = q + ((size_t)tok * n_heads + head) * d;
        for (int e = lane; e < d; e += 32) qw[e] = f16r(scale_q ? qr[e] * scale : qr[e]);
    }
    if (scale_q) sc = 1.0f;
    if (softcap > 0.0f) sc = sc / softcap;
    const __half2* kb2 = (const __half2*)(kc + (size_t)kvh * ctx * d);
    const __half2* vb2 = (const __half2*)(vc + (size_t)kvh * ctx * d);
    const int dpl = d / 32, m = d / 64;
    float acc[MAX_DPL];
#pragma unroll
    for (int j = 0; j < MAX_DPL; j++) acc[j] = 0.0f;
    float mx = -INFINITY, sum = 0.0f;
    for (int c0 = kfirst; c0 <= p_hi; c0 += ck) {
        const int nk = min(ck, p_hi + 1 - c0);
        __syncthreads();
        // Stage the chunk's K and V rows, 16 bytes per load, eight loads in flight.
        const int h8 = d / 8;
        const uint4* kb16 = (const uint4*)kb2 + (size_t)c0 * h8;
        const uint4* vb16 = (const uint4*)vb2 + (size_t)c0 * h8;
#pragma unroll 8
        for (int i = threadIdx.x; i < nk * h8; i += 128) {
            const int row = i / h8, c8 = i % h8;
            const uint4 kv = kb16[i], vv = vb16[i];
            unsigned int* kd = (unsigned int*)(ks + row * kst + 8 * c8);
            kd[0] = kv.x;
            kd[1] = kv.y;
            kd[2] = kv.z;
            kd[3] = kv.w;
            ((uint4*)vs)[row * h8 + c8] = vv;
        }
        __syncthreads();
        if (!active) continue;
        const int lo = max(first - c0, 0), hi = min(p - c0 + 1, nk);
        if (lo >= hi) continue;
        // 1. Scores, a thread per key, each summed in ggml's order.
        for (int i = lo + lane; i < hi; i += 32) {
            const __half* kr = ks + i * kst;
            float r[16];
#pragma unroll
            for (int l = 0; l < 16; l++) {
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
                for (int c = 0; c < m; c++) {
                    const float* qq = qw + 64 * c;
                    const __half* kk = kr + 64 * c;
                    a0 = fmaf(qq[l], __half2float(kk[l]), a0);
                    a1 = fmaf(qq[16 + l], __half2float(kk[16 + l]), a1);
                    a2 = fmaf(qq[32 + l], __half2float(kk[32 + l]), a2);
                    a3 = fmaf(qq[48 + l], __half2float(kk[48 + l]), a3);
                }
                r[l] = __fadd_rn(__fadd_rn(a0, a2), __fadd_rn(a1, a3));
            }
#pragma unroll
            for (int l = 0; l < 8; l++) r[l] = __fadd_rn(r[l], r[l + 8]);
#pragma unroll
            for (int l = 0; l < 4; l++) r[l] = __fadd_rn(r[l], r[l + 4]);
#pragma unroll
            for (int l = 0; l < 2; l++) r[l] = __fadd_rn(r[l], r[l + 2]);
            float s = __fmul_rn(__fadd_rn(r[0], r[1]), sc);
            if (softcap > 0.0f) s = softcap * tanhf(s);
            arg[i] = s;
        }
        __syncwarp();
        // 2. ggml's running maximum as a prefix maximum, 32 keys at a time; the exponents.
        for (int g0 = lo; g0 < hi; g0 += 32) {
            const int i = g0 + lane;
            const float s = i < hi ? arg[i] : -INFINITY;
            float incl = s;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float t = __shfl_up_sync(0xffffffff, incl, o);
                if (lane >= o) incl = fmaxf(incl, t);
            }
            const float up = __shfl_up_sync(0xffffffff, incl, 1);
            const float before = lane == 0 ? mx : fmaxf(mx, up);
            if (i < hi) {
                const bool rs = s > before;
                arg[i] = expf(rs ? before - s : s - before);
                rsc[i] = rs;
            }
            mx = fmaxf(mx, __shfl_sync(0xffffffff, incl, 31));
        }
        __syncwarp();
        // 3. The value sum, key by key, in f16 precision.
        for (int i = lo; i < hi; i++) {
            const float e = arg[i];
            const bool rs = rsc[i];
            const float ms = rs ? e : 1.0f, vsc = rs ? 1.0f : e;
            const __half* vr = vs + i * d;
#pragma unroll
            for (int j = 0; j < MAX_DPL; j++) {
                if (j < dpl) {
                    float y = acc[j];
                    if (rs) y = f16r(__fmul_rn(y, ms));
                    acc[j] = f16r(fmaf(__half2float(vr[lane + 32 * j]), vsc, y));
                }
            }
            sum = fmaf(sum, ms, vsc);
        }
        __syncwarp();
    }
    if (!active) return;
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    const int nsub = n_heads * d / QK;
#pragma unroll
    for (int j = 0; j < MAX_DPL; j++)
        if (j < dpl)
            quant_warp(acc[j] * inv,
                       xq + ((size_t)tok * nsub + (head * d + lane + 32 * j) / QK) * Q8_BYTES);
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
    float a;
    if (act == 0) {
        a = x / (1.0f + expf(-x));
    } else {
        a = 0.5f * x * (1.0f + tanhf(0.7978845608f * x * (1.0f + 0.044715f * x * x)));
    }
    quant_warp(a * u[at], xq + ((size_t)tok * nsub + b) * Q8_BYTES);
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
