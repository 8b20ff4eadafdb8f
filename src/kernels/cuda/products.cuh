// Quantized matrix products: one token (a warp per row: mmv, and gate/up with the gated
// activation: mmv_glu) and prompts (64 × 64 tiles: mmq, int8 tensor cores on sm_80+).

#pragma once

// One warp's dot product of a weight row with one token's q8 input: lanes take the row's
// units (`units`) in turn. Every lane gets the sum.
template <int T>
static __device__ __forceinline__ float row_dot(const uint8_t* row, int nsub, const uint8_t* xq) {
    float acc = 0.0f;
    const int n = units<T>(nsub);
    for (int u = threadIdx.x & 31; u < n; u += 32) acc += dot_unit<T>(row, u, xq);
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

// One of up to three matrices sharing an input (Q/K/V, gate/up): the one holding unit `u` when
// each spans ceil(rows / unit) units (a row for one token, a 64-row tile for prompts), with
// `u` made relative to it; `w` is null past the last. Only the first has `add`.
struct Pick {
    const uint8_t* w;
    int t, rows, u;
    float* y;
    const float* add;
};

#define MATS_PARAMS                                                                          \
    const uint8_t *w0, const uint8_t *w1, const uint8_t *w2, int t0, int t1, int t2, int r0, \
        int r1, int r2, float *y0, float *y1, float *y2, const float *add0
#define MATS_ARGS w0, w1, w2, t0, t1, t2, r0, r1, r2, y0, y1, y2, add0

static __device__ __forceinline__ Pick pick(int u, int unit, MATS_PARAMS) {
    const int n0 = (r0 + unit - 1) / unit, n1 = (r1 + unit - 1) / unit;
    const int n2 = (r2 + unit - 1) / unit;
    if (u < n0) return {w0, t0, r0, u, y0, add0};
    if (u < n0 + n1) return {w1, t1, r1, u - n0, y1, nullptr};
    if (u < n0 + n1 + n2) return {w2, t2, r2, u - n0 - n1, y2, nullptr};
    return {nullptr, 0, 0, 0, nullptr, nullptr};
}

// Writes output `at` of the picked matrix: plus `add` when it has one, soft-capped when
// `cap` > 0.
static __device__ __forceinline__ void put(const Pick& m, size_t at, float o, float cap) {
    if (m.add) o += m.add[at];
    if (cap > 0.0f) o = cap * tanhf(o / cap);
    m.y[at] = o;
}

// One-token products of up to three matrices sharing one q8 input (Q/K/V, gate/up), each with
// its own weight type: y_m[row] = W_m[row] · x (+ add0[row] for matrix 0), soft-capped when
// `cap` > 0. A warp per row; grid: rows / 4; 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    mmv(MATS_PARAMS, const uint8_t* xq, int k, float cap) {
    const Pick m = pick(blockIdx.x * 4 + (threadIdx.x >> 5), 1, MATS_ARGS);
    if (!m.w) return;
    const float o = dot_row(m.w, m.t, m.u, k, xq);
    if ((threadIdx.x & 31) == 0) put(m, m.u, o, cap);
}

// Both rows `row` of two matrices of one type against the same input, their loads together.
template <int T>
static __device__ __forceinline__ float2 row_dot2(const uint8_t* ra, const uint8_t* rb, int nsub,
                                                  const uint8_t* xq) {
    // Two Q6_K units side by side (26 words each) spill at 1024 threads' 64 registers.
    if (T == T_Q6_K) return make_float2(row_dot<T>(ra, nsub, xq), row_dot<T>(rb, nsub, xq));
    float a = 0.0f, b = 0.0f;
    const int n = units<T>(nsub);
    for (int u = threadIdx.x & 31; u < n; u += 32) {
        a += dot_unit<T>(ra, u, xq);
        b += dot_unit<T>(rb, u, xq);
    }
    return make_float2(warp_sum(a), warp_sum(b));
}

// One token's gate and up rows `blockIdx.x * 32..` and the gated activation, quantized into
// the q8 block `blockIdx.x` of `out` (another buffer than the input): a block per 32 rows, a
// warp per row pair, so each block holds a whole q8 block. 1024 threads.
static __device__ __forceinline__ void glu_rows(const uint8_t* wg, const uint8_t* wu, int tg,
                                                int tu, const uint8_t* xq, int k, int gelu,
                                                uint8_t* out) {
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
        const float act = gelu ? act_gelu(x) : act_silu(x);
        quant_warp(__fmul_rn(act, u[lane]), out + (size_t)blockIdx.x * Q8_BYTES);
    }
}

// One token's gate/up products with the gated activation. Grid: ffn / 32; 1024 threads.
extern "C" __global__ void __launch_bounds__(1024)
    mmv_glu(const uint8_t* wg, const uint8_t* wu, int tg, int tu, const uint8_t* xq, int k,
            int gelu, uint8_t* out) {
    glu_rows(wg, wu, tg, tu, xq, k, gelu, out);
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

// Which input row each of a tile's tokens reads and which output row it writes: itself, or
// (routed experts) the pair list `gather` of one expert, whose entry p reads row p / div and
// writes row p.
struct Rows {
    const int* gather;
    int div;
    __device__ __forceinline__ int in(int tok) const { return gather ? gather[tok] / div : tok; }
    __device__ __forceinline__ int out(int tok) const { return gather ? gather[tok] : tok; }
};

// Loads the q8 blocks b0.. b0 + KB of tokens tok0.. tok0 + T into shared memory (zeros past
// the ends), as 8-byte loads all issued before any is used.
template <int KB, int T, int S>
static __device__ __forceinline__ void stage_x(const uint8_t* xq, int b0, int nsub, int tok0,
                                               int ntok, Rows rows, int (*xv)[T][S],
                                               float (*xd)[T], float (*xs)[T]) {
    constexpr int N = KB * T * 5, PER = N / 128;
    int2 val[PER];
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int e = threadIdx.x + 128 * u, kb = e / (T * 5), rem = e % (T * 5);
        const int tk = rem / 5, w2 = rem % 5, b = b0 + kb, tok = tok0 + tk;
        val[u] = make_int2(0, 0);
        if (b < nsub && tok < ntok)
            val[u] = ((const int2*)(xq + ((size_t)rows.in(tok) * nsub + b) * Q8_BYTES))[w2];
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

// One step of a prompt tile: the KB sub-blocks from b0 of its R weight rows (unpacked, two
// per thread of 128) and of its T tokens' q8 inputs, into shared memory.
template <int KB, int R, int T, int S>
static __device__ __forceinline__ void stage_tile(const uint8_t* w, int t, int bytes, int rows,
                                                  int row0, int b0, int nsub, const uint8_t* xq,
                                                  int tok0, int ntok, Rows map, int (*wv)[R][S],
                                                  float (*wa)[R], float (*wa2)[R],
                                                  float (*wb)[R], int (*xv)[T][S],
                                                  float (*xd)[T], float (*xs)[T]) {
    static_assert(KB * R == 256, "two weight sub-blocks per thread");
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int e = threadIdx.x + 128 * u, kb = e / R, r = e % R;
        stage_sub(w, t, bytes, rows, row0 + r, b0 + kb, nsub, wv[kb][r], &wa[kb][r],
                  &wa2[kb][r], &wb[kb][r]);
    }
    stage_x<KB, T, S>(xq, b0, nsub, tok0, ntok, map, xv, xd, xs);
}

#if __CUDA_ARCH__ >= 800
// Tensor-core form (sm_80+): a block computes 64 rows × 64 tokens, each warp 16 rows × 64
// tokens with int8 mma.m16n8k32 per 32-value sub-block (Q6_K: m16n8k16 per half, so the two
// halves keep their integer sums apart for its two scales), then scales the sums in f32.
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

// The whole 32-value sub-block in one product, for types with one scale per sub-block.
static __device__ __forceinline__ void mma_s8_k32(int (&c)[4], int a0, int a1, int a2, int a3,
                                                  int b0, int b1) {
    c[0] = c[1] = c[2] = c[3] = 0;
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void mmq_tile(const Pick& m, const uint8_t* xq, int k,
                                                int ntok, float cap, Rows map) {
    __shared__ int wv[TC_KB][TC_R][TC_S];
    __shared__ float wa[TC_KB][TC_R], wa2[TC_KB][TC_R], wb[TC_KB][TC_R];
    __shared__ int xv[TC_KB][TC_T][TC_S];
    __shared__ float xd[TC_KB][TC_T], xs[TC_KB][TC_T];
    const uint8_t* w = m.w;
    const int t = m.t, rows = m.rows, tile = m.u;
    const int row0 = tile * TC_R, tok0 = blockIdx.y * TC_T;
    const int nsub = k / QK, bytes = row_bytes(t, nsub);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    // Tokens of this tile that exist: an expert's list fills a tile only in part, and the
    // products of the 8-token columns past its end are skipped (their outputs are not written).
    const int live = ntok - tok0;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int b0 = 0; b0 < nsub; b0 += TC_KB) {
        stage_tile<TC_KB, TC_R, TC_T, TC_S>(w, t, bytes, rows, row0, b0, nsub, xq, tok0, ntok, map,
                                             wv, wa, wa2, wb, xv, xd, xs);
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < TC_KB; kb++) {
            const int ra = warp * 16 + g, rb = ra + 8;
            const int a00 = wv[kb][ra][tg], a01 = wv[kb][rb][tg];
            const int a10 = wv[kb][ra][4 + tg], a11 = wv[kb][rb][4 + tg];
            const float fa[2] = {wa[kb][ra], wa[kb][rb]}, fa2[2] = {wa2[kb][ra], wa2[kb][rb]};
            const float fb[2] = {wb[kb][ra], wb[kb][rb]};
            if (t != T_Q6_K) {
                // One scale for all 32 values: one k32 product and one scaling per output.
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    if (nt * 8 >= live) break;
                    const int tk = nt * 8 + g;
                    int c[4];
                    mma_s8_k32(c, a00, a01, a10, a11, xv[kb][tk][tg], xv[kb][tk][4 + tg]);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int hr = e >> 1, col = nt * 8 + 2 * tg + (e & 1);
                        acc[nt][e] += xd[kb][col] * (fa[hr] * (float)c[e]) + fb[hr] * xs[kb][col];
                    }
                }
                continue;
            }
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                if (nt * 8 >= live) break;
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
            put(m, (size_t)map.out(tok) * rows + row, acc[nt][e], cap);
        }
    }
}
#else
static __device__ __forceinline__ void mmq_tile(const Pick& m, const uint8_t* xq, int k,
                                                int ntok, float cap, Rows map) {
    __shared__ int wv[MQ_KB][MQ_R][8];
    __shared__ float wa[MQ_KB][MQ_R], wa2[MQ_KB][MQ_R], wb[MQ_KB][MQ_R];
    __shared__ int xv[MQ_KB][MQ_T][8];
    __shared__ float xd[MQ_KB][MQ_T], xs[MQ_KB][MQ_T];
    const uint8_t* w = m.w;
    const int t = m.t, rows = m.rows, tile = m.u;
    const int row0 = tile * MQ_R, tok0 = blockIdx.y * MQ_T;
    const int nsub = k / QK, bytes = row_bytes(t, nsub);
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int b0 = 0; b0 < nsub; b0 += MQ_KB) {
        stage_tile<MQ_KB, MQ_R, MQ_T, 8>(w, t, bytes, rows, row0, b0, nsub, xq, tok0, ntok, map, wv,
                                         wa, wa2, wb, xv, xd, xs);
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
            put(m, (size_t)map.out(tok) * rows + row, acc[i][j], cap);
        }
    }
}

#endif

// Prompt products of up to three matrices sharing one q8 input (Q/K/V, gate/up), 64 rows ×
// 64 tokens a block. Grid: (64-row tiles of all matrices, 64-token groups); 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    mmq(MATS_PARAMS, const uint8_t* xq, int k, int ntok, float cap) {
    const Pick m = pick(blockIdx.x, MQ_R, MATS_ARGS);
    if (!m.w) return;
    mmq_tile(m, xq, k, ntok, cap, Rows{nullptr, 1});
}
