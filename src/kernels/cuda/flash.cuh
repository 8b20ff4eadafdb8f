// Prompt attention on the tensor cores (flash attention): a block takes 64 queries of one head,
// a warp 16 of them; keys and values come through shared memory KT at a time (64, or 32 for
// heads wider than 128). Scores are f16 × f16 products summed in f32 (mma.m16n8k16), the
// softmax runs online in f32 (each query's maximum and sum across the four lanes that hold
// its row), and the probabilities, rounded to f16, multiply the values the same way. The
// output is written as the output projection's q8 input. Masks: causal, and the sliding
// window where the layer has one; soft-capping and the query scale as in attn_seq.
// Grid: (n_heads, ceil(ntok / 64)); 128 threads. MLCLI_CUDA_FLASH=0 takes attn_seq instead.

#pragma once

static __device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4],
                                               unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const unsigned*)&h;
}

// Keys per shared-memory tile for heads of `d`.
static __host__ __device__ constexpr int flash_keys(int d) { return d > 128 ? 32 : 64; }

// Dynamic shared memory of `attn_flash` for heads of `d`: the K tile (rows d + 8 halves
// apart) and the V tile transposed (rows of keys, KT + 8 apart); the output staging reuses it.
static __host__ __device__ constexpr int flash_shared(int d) {
    return flash_keys(d) * (d + 8) * 2 + d * (flash_keys(d) + 8) * 2;
}

template <int D>
static __device__ __forceinline__ void attn_flash_body(
    const float* q, const __half* kc, const __half* vc, uint8_t* xq, const int* pos0, int ctx,
    int n_heads, int n_kv, float scale, int scale_q, float softcap, int window, int ntok) {
    constexpr int KT = flash_keys(D), KS = D + 8, VS = KT + 8, DK = D / 16, DN = D / 8;
    constexpr int NT = KT / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    __half* ks = (__half*)smem;
    __half* vt = ks + KT * KS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    const int head = blockIdx.x, kvh = head / (n_heads / n_kv);
    const int tok0 = blockIdx.y * 64, wtok = tok0 + warp * 16;
    const int base = *pos0;
    // This lane's two query rows (g and g + 8 of the warp's 16) and their positions.
    const int t_lo = wtok + g, t_hi = wtok + g + 8;
    const int p_lo = base + t_lo, p_hi = base + t_hi;
    float sc = scale_q ? 1.0f : scale;
    if (softcap > 0.0f) sc = sc / softcap;
    // The warp's queries as A fragments (rows g, g + 8; dimensions 2tg.. and 2tg + 8..).
    unsigned qa[DK][4];
    {
        const float qs = scale_q ? scale : 1.0f;
        const int ta = min(t_lo, ntok - 1), tb = min(t_hi, ntok - 1);
        const float* qr0 = q + ((size_t)ta * n_heads + head) * D;
        const float* qr1 = q + ((size_t)tb * n_heads + head) * D;
#pragma unroll
        for (int c = 0; c < DK; c++) {
            const int e = c * 16 + 2 * tg;
            qa[c][0] = pack_h2(qr0[e] * qs, qr0[e + 1] * qs);
            qa[c][1] = pack_h2(qr1[e] * qs, qr1[e + 1] * qs);
            qa[c][2] = pack_h2(qr0[e + 8] * qs, qr0[e + 9] * qs);
            qa[c][3] = pack_h2(qr1[e + 8] * qs, qr1[e + 9] * qs);
        }
    }
    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    // Keys the block needs: from the first query's window start to the last query.
    const int last = base + min(tok0 + 63, ntok - 1);
    const int kfirst = window > 0 ? max(0, base + tok0 + 1 - window) : 0;
    const __half* kb = kc + (size_t)kvh * ctx * D;
    const __half* vb = vc + (size_t)kvh * ctx * D;
    const int wlast = base + min(wtok + 15, ntok - 1);
    const int wfirst = window > 0 ? max(0, base + wtok + 1 - window) : 0;
    for (int c0 = kfirst; c0 <= last; c0 += KT) {
        const int nk = min(KT, last + 1 - c0);
        __syncthreads();
        // Stage K rows as they are and V transposed, 16 bytes per load; zeros past the end.
        constexpr int H8 = D / 8;
        for (int i = threadIdx.x; i < KT * H8; i += 128) {
            const int row = i / H8, c8 = i % H8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (row < nk) {
                kv = ((const uint4*)(kb + (size_t)(c0 + row) * D))[c8];
                vv = ((const uint4*)(vb + (size_t)(c0 + row) * D))[c8];
            }
            *(uint4*)(ks + row * KS + 8 * c8) = kv;
            const __half* vh = (const __half*)&vv;
#pragma unroll
            for (int u = 0; u < 8; u++) vt[(8 * c8 + u) * VS + row] = vh[u];
        }
        __syncthreads();
        // The warp's rows see none of this tile: skip it.
        if (c0 > wlast || c0 + nk <= wfirst) continue;
        // 1. Scores S = Q·Kᵀ (16 × KT), f32.
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const __half* kr = ks + (n * 8 + g) * KS + 2 * tg;
#pragma unroll
            for (int c = 0; c < DK; c++) {
                const unsigned b0 = *(const unsigned*)(kr + c * 16);
                const unsigned b1 = *(const unsigned*)(kr + c * 16 + 8);
                mma_f16(s[n], qa[c], b0, b1);
            }
        }
        // 2. Scale, cap, mask; each row's new maximum (over the four lanes of its quad).
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = c0 + n * 8 + 2 * tg + (e & 1);
                const int p = e < 2 ? p_lo : p_hi;
                float v = s[n][e] * sc;
                if (softcap > 0.0f) v = softcap * tanhf(v);
                const bool in = key < c0 + nk && key <= p && (window <= 0 || key > p - window);
                v = in ? v : -INFINITY;
                s[n][e] = v;
                if (e < 2) mx0 = fmaxf(mx0, v);
                else mx1 = fmaxf(mx1, v);
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, off));
        }
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        // Rows with nothing unmasked yet keep a maximum of -inf: their exponents are all 0.
        const float z0 = n0 == -INFINITY ? 0.0f : n0, z1 = n1 == -INFINITY ? 0.0f : n1;
        const float a0 = expf(m0 - z0), a1 = expf(m1 - z1);
        m0 = n0;
        m1 = n1;
        float r0 = 0.0f, r1 = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = expf(s[n][0] - z0);
            s[n][1] = expf(s[n][1] - z0);
            s[n][2] = expf(s[n][2] - z1);
            s[n][3] = expf(s[n][3] - z1);
            r0 += s[n][0] + s[n][1];
            r1 += s[n][2] + s[n][3];
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            r0 += __shfl_xor_sync(0xffffffff, r0, off);
            r1 += __shfl_xor_sync(0xffffffff, r1, off);
        }
        l0 = l0 * a0 + r0;
        l1 = l1 * a1 + r1;
#pragma unroll
        for (int n = 0; n < DN; n++) {
            o[n][0] *= a0;
            o[n][1] *= a0;
            o[n][2] *= a1;
            o[n][3] *= a1;
        }
        // 3. O += P·V: the scores' accumulators are the A fragments of P (16 keys per step).
#pragma unroll
        for (int c = 0; c < KT / 16; c++) {
            const unsigned pa[4] = {pack_h2(s[2 * c][0], s[2 * c][1]),
                                    pack_h2(s[2 * c][2], s[2 * c][3]),
                                    pack_h2(s[2 * c + 1][0], s[2 * c + 1][1]),
                                    pack_h2(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
            for (int n = 0; n < DN; n++) {
                const __half* vr = vt + (n * 8 + g) * VS + c * 16 + 2 * tg;
                mma_f16(o[n], pa, *(const unsigned*)vr, *(const unsigned*)(vr + 8));
            }
        }
    }
    // The rows divided by their sums, staged 32 dimensions at a time in the warp's part of
    // shared memory, each row's 32 values quantized by the whole warp.
    __syncthreads();
    float* stage = (float*)smem + warp * 16 * 32;
    const float i0 = l0 == 0.0f ? 0.0f : 1.0f / l0, i1 = l1 == 0.0f ? 0.0f : 1.0f / l1;
    const int nsub = n_heads * D / QK;
#pragma unroll
    for (int blk = 0; blk < D / 32; blk++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = blk * 4 + j, col = j * 8 + 2 * tg;
            stage[g * 32 + col] = o[n][0] * i0;
            stage[g * 32 + col + 1] = o[n][1] * i0;
            stage[(g + 8) * 32 + col] = o[n][2] * i1;
            stage[(g + 8) * 32 + col + 1] = o[n][3] * i1;
        }
        __syncwarp();
        for (int r = 0; r < 16; r++) {
            const int tok = wtok + r;
            if (tok >= ntok) break;
            quant_warp(stage[r * 32 + lane],
                       xq + ((size_t)tok * nsub + (head * D) / QK + blk) * Q8_BYTES);
        }
        __syncwarp();
    }
}

// The arguments of attn_seq; `d` must be the kernel's own width.
#define ATTN_FLASH(NAME, D)                                                                    \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                   \
        const float* q, const __half* kc, const __half* vc, uint8_t* xq, const int* pos0,     \
        int ctx, int n_heads, int n_kv, int d, float scale, int scale_q, float softcap,       \
        int window, int ntok) {                                                               \
        if (d != D) __trap();                                                                 \
        attn_flash_body<D>(q, kc, vc, xq, pos0, ctx, n_heads, n_kv, scale, scale_q, softcap,  \
                           window, ntok);                                                     \
    }
ATTN_FLASH(attn_flash64, 64)
ATTN_FLASH(attn_flash128, 128)
ATTN_FLASH(attn_flash192, 192)
ATTN_FLASH(attn_flash256, 256)
