// Attention: one token split over the keys with its own RoPE and cache store (attn_one{1..4}_{D},
// by query heads per block and head width), and prompts in llama.cpp's CPU order (attn_seq).

#pragma once

// ---------------------------------------------------------------------------------------
// Attention of one token, split over the keys: grid (n_heads / (GB · HW), 1, splits), 128 · HW
// threads. A block takes GB · HW query heads of one KV head, so each key and value row it reads
// serves all of them (GQA models share a KV head among 2–8 query heads; a block per query head
// read every row that many times). Its warps come in HW sets of four (ATT_WARPS), a set per GB
// heads: the warps of two sets that take the same keys stage their rows in shared memory
// together and each scores its own heads, so eight heads share one read of a row with no more
// registers a thread than four take (a warp holding eight heads' sums needed 128, and half the
// blocks an SM). Each block first applies the per-head norm and RoPE to its
// query heads; the block whose split holds the token's own position does the same to the
// token's key, stores key and value in the f16 cache and uses them from shared memory
// (blocks of other query heads of the same KV head write the same bytes). The query at
// position p attends to keys [first, p + 1), `first` where the window starts, in `splits`
// equal shares (`chunk` keys; the launch sets the count, the kernel the share, so a captured
// step serves every later position). A warp takes 32 keys at a time: their rows staged in
// shared memory, a key per lane for the scores and the online softmax of every head, then
// the value rows staged in the same space, summed key by key with the head's dimensions
// across lanes. Every head's numbers are computed in the same order as with one
// head per block. The partials (max, sum, d values) go to `part`; the last split of a block
// group to finish (a counter per group, reset by it) joins them and writes the heads' parts
// of the output projection's q8 input.

#define ATT_WARPS 4
#define MAX_DPL 8  // head_dim / 32, up to 256
#define MAX_SPLITS 256  // at least the decoder's MAX_SPLITS (mod.rs)

// The HW warps that take the same keys (`kw`, one of each set) wait for each other: with one
// set, the warp itself; with two, a named barrier of their 64 threads (ids 1..4; 0 is
// __syncthreads').
template <int HW>
static __device__ __forceinline__ void pair_sync(int kw) {
    if (HW == 1) {
        __syncwarp();
        return;
    }
    // Ids as immediates: an id in a register makes ptxas reserve all sixteen barriers.
    switch (kw) {
        case 0: asm volatile("bar.sync 1, %0;" ::"n"(32 * HW) : "memory"); break;
        case 1: asm volatile("bar.sync 2, %0;" ::"n"(32 * HW) : "memory"); break;
        case 2: asm volatile("bar.sync 3, %0;" ::"n"(32 * HW) : "memory"); break;
        default: asm volatile("bar.sync 4, %0;" ::"n"(32 * HW) : "memory"); break;
    }
}

// Sum over the 128 threads of each set in f64, in block_sum_f64's order; every thread gets
// its set's sum.
template <int HW>
static __device__ double set_sum_f64(double v) {
    __shared__ double part[ATT_WARPS * HW];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < ATT_WARPS ? part[(warp / ATT_WARPS) * ATT_WARPS + lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Chunk c8 (16 bytes) of staged row `row` sits at chunk c8 ^ (row & 7) of the row, so that the
// eight lanes of a 16-byte shared load, each reading the same chunk of its own row, hit eight
// different bank groups (rows are 128, 256 or 512 bytes, all in the same banks otherwise).
static __device__ __forceinline__ int stage_at(int row, int c8, int h8) {
    return row * h8 + (c8 ^ (row & 7));
}

template <int GB, int D, int HW>
static __device__ __forceinline__ void attn_one_body(
    const float* q, const float* k, const float* v, const float* qn, const float* kn, float eps,
    __half* kc, __half* vc, float* part, unsigned int* done, uint8_t* xq, const int* pos0,
    int ctx, int n_heads, int n_kv, float scale, float softcap, int window, float theta_scale,
    const float* factors, float pos_scale, int neox) {
    // 4 warps × 32 rows × D halves: a warp's group of keys, then of values; after the keys,
    // the warps' partial sums; in the join, the splits' maxima, sums and the outputs.
    extern __shared__ __align__(16) unsigned char vstage[];
    constexpr int d = D, dpl = D / 32, half = D / 2, h8 = D / 8;
    constexpr int GT = GB * HW, NW = ATT_WARPS * HW;  // heads and warps of the block
    static_assert(GB <= ATT_WARPS, "the join gives each head a warp");
    static_assert((2 * GT * MAX_SPLITS + GT * D) * 4 <= ATT_WARPS * 32 * D * 2 &&
                      (GT * ATT_WARPS * D + D) * 4 <= ATT_WARPS * 32 * D * 2,
                  "the partial sums and the join fit the staging space");
    __shared__ float qs[GT][D];
    __shared__ __align__(16) __half kcur[D];
    __shared__ __align__(16) __half vcur[D];
    __shared__ float sm[GT][ATT_WARPS], sl[GT][ATT_WARPS];
    __shared__ bool last;
    const int grp = blockIdx.x, split = blockIdx.z, nsplit = gridDim.z;
    const int head0 = grp * GT, kvh = head0 / (n_heads / n_kv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // The warp's keys (`kw`) and its set (`hs`), whose heads start at `hb` in the block; a
    // thread's place in its set (`tl`).
    const int kw = warp % ATT_WARPS, hs = warp / ATT_WARPS, hb = hs * GB, tl = threadIdx.x % 128;
    const int p = *pos0;
    const int first = window > 0 ? max(0, p + 1 - window) : 0;
    const int chunk = (p + 1 - first + nsplit - 1) / nsplit;
    const int k0 = first + split * chunk, k1 = min(first + (split + 1) * chunk, p + 1);
    __half* kb = kc + (size_t)kvh * ctx * d;
    __half* vb = vc + (size_t)kvh * ctx * d;
    const bool own = k0 <= p && p < k1;
    const bool keyer = own && hs == 0;  // the set that ropes and stores the token's key
    // 1. The query heads and, where this split holds the token's position, its key and
    //    value: all loads first, then the per-head norms, then RoPE with angles shared by Q
    //    and K.
    float qx[GB][2][2], kx[2][2], vv[2];
    double qss[GB], kss = 0.0;
#pragma unroll
    for (int h = 0; h < GB; h++) qss[h] = 0.0;
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = tl + 128 * u;
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const bool in = i < half;
#pragma unroll
        for (int h = 0; h < GB; h++) {
            const float* qh = q + (size_t)(head0 + hb + h) * d;
            qx[h][u][0] = in ? qh[i0] : 0.0f;
            qx[h][u][1] = in ? qh[i1] : 0.0f;
            qss[h] += (double)__fmul_rn(qx[h][u][0], qx[h][u][0]) +
                      (double)__fmul_rn(qx[h][u][1], qx[h][u][1]);
        }
        kx[u][0] = in && keyer ? k[(size_t)kvh * d + i0] : 0.0f;
        kx[u][1] = in && keyer ? k[(size_t)kvh * d + i1] : 0.0f;
        const int e = tl + 128 * u;
        vv[u] = keyer && e < d ? v[(size_t)kvh * d + e] : 0.0f;
        kss += (double)__fmul_rn(kx[u][0], kx[u][0]) + (double)__fmul_rn(kx[u][1], kx[u][1]);
    }
    float qsc[GB];
#pragma unroll
    for (int h = 0; h < GB; h++) qsc[h] = qn ? rms_scale(set_sum_f64<HW>(qss[h]), d, eps) : 1.0f;
    const float ksc = own && kn ? rms_scale(set_sum_f64<HW>(kss), d, eps) : 1.0f;
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = tl + 128 * u;
        if (i < half) {
            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float c, sn;
            rope_cs(i, p, theta_scale, factors, pos_scale, c, sn);
#pragma unroll
            for (int h = 0; h < GB; h++) {
                float x0 = qx[h][u][0], x1 = qx[h][u][1];
                if (qn) {
                    x0 = (x0 * qsc[h]) * qn[i0];
                    x1 = (x1 * qsc[h]) * qn[i1];
                }
                qs[hb + h][i0] = x0 * c - x1 * sn;
                qs[hb + h][i1] = x0 * sn + x1 * c;
            }
            if (keyer) {
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
        const int e = tl + 128 * u;
        if (keyer && e < d) {
            const __half vh = __float2half(vv[u]);
            vcur[e] = vh;
            vb[(size_t)p * d + e] = vh;
        }
    }
    __syncthreads();
    // 2. A warp takes 32 keys at a time: their rows staged in its shared memory with 16-byte
    //    loads that read whole rows together (a lane per key reading its own row put 32 rows'
    //    lines through L1 per load, a third of the warps' stalls), the scores a key per lane
    //    for every head, then the value rows staged in the same space and summed key by key.
    float acc[GB][dpl], m[GB], l[GB];
#pragma unroll
    for (int h = 0; h < GB; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
#pragma unroll
        for (int j = 0; j < dpl; j++) acc[h][j] = 0.0f;
    }
    uint4* vw = (uint4*)vstage + (size_t)kw * 32 * h8;
    const int first_e = lane + 32 * hs;  // the sets stage a group's rows together
    for (int g = k0 + 32 * kw; g < k1; g += 32 * ATT_WARPS) {
        const int key = g + lane, nk = min(32, k1 - g);
#pragma unroll 8
        for (int e = first_e; e < nk * h8; e += 32 * HW) {
            const int row = e / h8, c8 = e % h8, kj = g + row;
            vw[stage_at(row, c8, h8)] =
                kj == p ? ((const uint4*)kcur)[c8] : ((const uint4*)(kb + (size_t)kj * d))[c8];
        }
        pair_sync<HW>(kw);
        float s[GB];
#pragma unroll
        for (int h = 0; h < GB; h++) s[h] = -INFINITY;
        if (key < k1) {
            // Two chains per head (even and odd dimensions), so more multiply-adds are in
            // flight than one chain of d would allow.
            float a[GB][2];
#pragma unroll
            for (int h = 0; h < GB; h++) a[h][0] = a[h][1] = 0.0f;
#pragma unroll 8
            for (int e8 = 0; e8 < h8; e8++) {
                const uint4 raw = vw[stage_at(lane, e8, h8)];
                const __half2* h2 = (const __half2*)&raw;
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const float2 kf = __half22float2(h2[u]);
#pragma unroll
                    for (int h = 0; h < GB; h++) {
                        a[h][0] = fmaf(qs[hb + h][8 * e8 + 2 * u], kf.x, a[h][0]);
                        a[h][1] = fmaf(qs[hb + h][8 * e8 + 2 * u + 1], kf.y, a[h][1]);
                    }
                }
            }
#pragma unroll
            for (int h = 0; h < GB; h++) {
                s[h] = (a[h][0] + a[h][1]) * scale;
                if (softcap > 0.0f) s[h] = softcap * tanhf(s[h] / softcap);
            }
        }
        float pk[GB];
#pragma unroll
        for (int h = 0; h < GB; h++) {
            const float mn = fmaxf(m[h], warp_max(s[h]));
            const float corr = expf(m[h] - mn);
            pk[h] = key < k1 ? expf(s[h] - mn) : 0.0f;
            l[h] = l[h] * corr + warp_sum(pk[h]);
#pragma unroll
            for (int j = 0; j < dpl; j++) acc[h][j] *= corr;
            m[h] = mn;
        }
        // The group's value rows where its keys were, then the weighted sums from there.
        pair_sync<HW>(kw);
#pragma unroll 8
        for (int e = first_e; e < nk * h8; e += 32 * HW) {
            const int row = e / h8, c8 = e % h8, kj = g + row;
            vw[e] = kj == p ? ((const uint4*)vcur)[c8] : ((const uint4*)(vb + (size_t)kj * d))[c8];
        }
        pair_sync<HW>(kw);
        const __half* vrows = (const __half*)vw;
        for (int jj = 0; jj < nk; jj++) {
            float pj[GB];
#pragma unroll
            for (int h = 0; h < GB; h++) pj[h] = __shfl_sync(0xffffffff, pk[h], jj);
#pragma unroll
            for (int j = 0; j < dpl; j++) {
                const float vx = __half2float(vrows[jj * d + lane + 32 * j]);
#pragma unroll
                for (int h = 0; h < GB; h++) acc[h][j] = fmaf(pj[h], vx, acc[h][j]);
            }
        }
        pair_sync<HW>(kw);
    }
    // 3. This split's partials (with one split, the results), the warps' sums in the space
    //    the values were staged in, the single split's output after them.
    __syncthreads();
    float* sacc = (float*)vstage;  // [GT][ATT_WARPS][d]
    float* y = sacc + GT * ATT_WARPS * d;  // [d]
#pragma unroll
    for (int h = 0; h < GB; h++) {
        if (lane == 0) {
            sm[hb + h][kw] = m[h];
            sl[hb + h][kw] = l[h];
        }
#pragma unroll
        for (int j = 0; j < dpl; j++)
            sacc[((hb + h) * ATT_WARPS + kw) * d + lane + 32 * j] = acc[h][j];
    }
    __syncthreads();
    for (int h = 0; h < GT; h++) {
        const int head = head0 + h;
        const float* sw = sacc + h * ATT_WARPS * d;
        float M = -INFINITY;
        for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[h][w]);
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sm[h][w] != -INFINITY) L += sl[h][w] * expf(sm[h][w] - M);
        if (nsplit == 1) {
            for (int e = threadIdx.x; e < d; e += blockDim.x) {
                float a = 0.0f;
                for (int w = 0; w < ATT_WARPS; w++)
                    if (sm[h][w] != -INFINITY) a += sw[w * d + e] * expf(sm[h][w] - M);
                y[e] = a / L;
            }
            __syncthreads();
            for (int sb = warp; sb < d / QK; sb += NW)
                quant_warp(y[sb * QK + lane], xq + ((size_t)head * d / QK + sb) * Q8_BYTES);
            __syncthreads();
            continue;
        }
        float* out = part + ((size_t)head * nsplit + split) * (d + 2);
        for (int e = threadIdx.x; e < d; e += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                if (sm[h][w] != -INFINITY) a += sw[w * d + e] * expf(sm[h][w] - M);
            out[2 + e] = a;
        }
        if (threadIdx.x == 0) {
            out[0] = M;
            out[1] = L;
        }
    }
    if (nsplit == 1) return;
    // 4. The last split of this group joins them all: every split's (max, sum) of every
    //    head into shared memory, the weights a warp per head, then the heads' values with
    //    all loads of a thread independent of each other.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&done[grp], 1u) == (unsigned)(nsplit - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    float(*fm)[MAX_SPLITS] = (float(*)[MAX_SPLITS])vstage;   // [GT][MAX_SPLITS]
    float(*fl)[MAX_SPLITS] = fm + GT;                         // [GT][MAX_SPLITS]
    float(*yg)[D] = (float(*)[D])(fl + GT);                   // [GT][D]
    const float* pg = part + (size_t)head0 * nsplit * (d + 2);  // the group's heads in a row
    for (int i = threadIdx.x; i < GT * nsplit; i += blockDim.x) {
        fm[i / nsplit][i % nsplit] = __ldcg(pg + (size_t)i * (d + 2));
        fl[i / nsplit][i % nsplit] = __ldcg(pg + (size_t)i * (d + 2) + 1);
    }
    __syncthreads();
    if (warp < GT) {
        float mm = -INFINITY;
        for (int sp = lane; sp < nsplit; sp += 32) mm = fmaxf(mm, fm[warp][sp]);
        mm = warp_max(mm);
        for (int sp = lane; sp < nsplit; sp += 32) {
            const float ms = fm[warp][sp];
            fm[warp][sp] = ms == -INFINITY ? 0.0f : expf(ms - mm);
        }
        __syncwarp();
        if (lane == 0) {
            float L = 0.0f;
            for (int sp = 0; sp < nsplit; sp++)
                if (fm[warp][sp] != 0.0f) L += fl[warp][sp] * fm[warp][sp];
            fl[warp][0] = L;
        }
    }
    __syncthreads();
    for (int o = threadIdx.x; o < GT * d; o += blockDim.x) {
        const int h = o / d, e = o % d;
        const float* ph = pg + (size_t)h * nsplit * (d + 2) + 2 + e;
        const float L = fl[h][0];
        float a = 0.0f;
        // 32 splits' loads in flight at a time: with 8, the join of 128 splits waited on the
        // L2 sixteen times per output, four outputs a thread, while the rest of the GPU idled.
#pragma unroll 32
        for (int sp = 0; sp < nsplit; sp++) a = fmaf(__ldcg(ph + (size_t)sp * (d + 2)), fm[h][sp], a);
        yg[h][e] = L > 0.0f ? a / L : 0.0f;
    }
    __syncthreads();
    for (int i = warp; i < GT * (d / QK); i += NW) {
        const int h = i / (d / QK), sb = i % (d / QK);
        quant_warp(yg[h][sb * QK + lane], xq + ((size_t)(head0 + h) * d / QK + sb) * Q8_BYTES);
    }
    if (threadIdx.x == 0) done[grp] = 0;
}

// attn_one{GB · HW}_{D}: GB · HW query heads per block (HW sets of four warps), heads of D.
// Registers capped so that as many blocks fit an SM as its shared memory takes (six of 128
// threads up to heads of 128, three past them; three of 256). Eight heads a block only for
// heads of 128: the join's space for eight heads' splits needs the staging of rows of 128.
#define ATTN_ONE(GB, D, HW, NAME)                                                             \
    extern "C" __global__ void __launch_bounds__(128 * HW, (D <= 128 ? 6 : 3) / HW) NAME(     \
        const float* q, const float* k, const float* v, const float* qn, const float* kn,     \
        float eps, __half* kc, __half* vc, float* part, unsigned int* done, uint8_t* xq,      \
        const int* pos0, int ctx, int n_heads, int n_kv, float scale, float softcap,          \
        int window, float theta_scale, const float* factors, float pos_scale, int neox) {     \
        attn_one_body<GB, D, HW>(q, k, v, qn, kn, eps, kc, vc, part, done, xq, pos0, ctx,     \
                                 n_heads, n_kv, scale, softcap, window, theta_scale, factors, \
                                 pos_scale, neox);                                            \
    }
#define ATTN_ONE_D(D)                          \
    ATTN_ONE(1, D, 1, attn_one1_##D)           \
    ATTN_ONE(2, D, 1, attn_one2_##D)           \
    ATTN_ONE(3, D, 1, attn_one3_##D)           \
    ATTN_ONE(4, D, 1, attn_one4_##D)
ATTN_ONE_D(64)
ATTN_ONE_D(128)
ATTN_ONE_D(192)
ATTN_ONE_D(256)
ATTN_ONE(4, 128, 2, attn_one8_128)

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
