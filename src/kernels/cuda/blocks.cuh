// The GGUF weight blocks the kernels read in place (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K):
// unpacking a 32-value sub-block, its dot product with a q8 activation block, row sizes, and
// single values (for embedding rows).

#pragma once

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

// One-token products read a row in units: a sub-block of 32 values, except for the K-quants.
// A Q4_K unit is the two sub-blocks (2q, 2q + 1) that share one 32-byte run of packed nibbles
// (the low and the high halves): its nibbles in two 16-byte loads, its scales in three words
// and both q8 blocks in 8-byte loads, 16 loads for 64 values, where two separate sub-blocks
// took 42 (each read all 32 bytes for half their nibbles, and its scale bytes one by one). A
// Q6_K unit is a half super-block (four sub-blocks, which share their 64 low-bit and 32
// high-bit bytes): 2-byte aligned blocks, read as aligned words joined by funnel shifts, 29
// loads where four sub-blocks took 128 16-bit ones. One-token products are bound by those
// instructions, not by memory.
template <int T>
static __device__ __forceinline__ int units(int nsub) {
    return T == T_Q4_K ? nsub / 2 : T == T_Q6_K ? nsub / 4 : nsub;
}

// The N words from the 2-byte aligned `p`: aligned loads, joined by funnel shifts where `p`
// is not 4-byte aligned (only then is the word past the last one read).
template <int N>
static __device__ __forceinline__ void load_words(const uint8_t* p, uint32_t (&w)[N]) {
    const uintptr_t a = (uintptr_t)p;
    const uint32_t* q = (const uint32_t*)(a & ~(uintptr_t)3);
    const int sh = (int)(a & 3) * 8;
    uint32_t raw[N];
#pragma unroll
    for (int i = 0; i < N; i++) raw[i] = q[i];
    const uint32_t last = sh ? q[N] : 0u;
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = __funnelshift_r(raw[i], i + 1 < N ? raw[i + 1] : last, sh);
}

// The integer products of 32 weights (`v`: 8 words of int8 lanes) with the 8-byte aligned q8
// block `xb`, its first and second 16 values apart; the block's (d, sum) into `ds`.
static __device__ __forceinline__ int2 dot_q8(const int (&v)[8], const uint8_t* xb, float2& ds) {
    ds = *(const float2*)xb;
    int2 s = make_int2(0, 0);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int2 x = ((const int2*)(xb + 8))[i];
        if (i < 2) {
            s.x = __dp4a(v[2 * i + 1], x.y, __dp4a(v[2 * i], x.x, s.x));
        } else {
            s.y = __dp4a(v[2 * i + 1], x.y, __dp4a(v[2 * i], x.x, s.y));
        }
    }
    return s;
}

// The sum over N consecutive sub-blocks whose q8 blocks start at `xb`: `unpack(t, v)` gives
// sub-block t's weights, `term(t, s, ds)` its term from the integer products `s` (first and
// second 16 values) and the q8 block's (d, sum) `ds`; terms added in order.
template <int N, class Unpack, class Term>
static __device__ __forceinline__ float sub_terms(const uint8_t* xb, Unpack unpack, Term term) {
    float r = 0.0f;
#pragma unroll
    for (int t = 0; t < N; t++) {
        int v[8];
        unpack(t, v);
        float2 ds;
        const int2 s = dot_q8(v, xb + t * Q8_BYTES, ds);
        r += term(t, s, ds);
    }
    return r;
}

// Byte `i` (0..3) of `w`.
static __device__ __forceinline__ int byte_of(uint32_t w, int i) { return (w >> (8 * i)) & 0xFF; }

// Unit `u` of a Q4_K row (pair q = u & 3 of super-block u >> 2) against the q8 blocks of its
// two sub-blocks. Each sub-block's term is the one `dot_sub` forms, the low one added first.
static __device__ __forceinline__ float q4k_pair(const uint8_t* row, int u, const uint8_t* xq) {
    const uint8_t* blk = row + (u >> 2) * 144;
    const int q = u & 3;
    const uint4 w0 = *(const uint4*)(blk + 16 + 32 * q), w1 = *(const uint4*)(blk + 32 + 32 * q);
    const uint32_t s0 = *(const uint32_t*)(blk + 4), s1 = *(const uint32_t*)(blk + 8);
    const uint32_t s2 = *(const uint32_t*)(blk + 12);
    const float d = ld_half(blk), dmin = ld_half(blk + 2);
    // Scales and minimums of sub-blocks j = 2q and 2q + 1 (ggml's get_scale_min_k4).
    int sc[2], mn[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int j = 2 * q + h, i = j & 3;
        if (j < 4) {
            sc[h] = byte_of(s0, i) & 63;
            mn[h] = byte_of(s1, i) & 63;
        } else {
            sc[h] = (byte_of(s2, i) & 0xF) | ((byte_of(s0, i) >> 6) << 4);
            mn[h] = (byte_of(s2, i) >> 4) | ((byte_of(s1, i) >> 6) << 4);
        }
    }
    const uint32_t w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    return sub_terms<2>(
        xq + (size_t)(2 * u) * Q8_BYTES,
        [&](int h, int (&v)[8]) {
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] = (int)((w[i] >> (4 * h)) & 0x0F0F0F0Fu);
        },
        [&](int h, int2 s, float2 ds) {
            return (d * (float)sc[h]) * ds.x * (float)(s.x + s.y) + (-dmin * (float)mn[h]) * ds.y;
        });
}

// Unit `u` of a Q6_K row: half n = u & 1 of super-block u >> 1, its sub-blocks t = 0..3 (values
// 32t..32t + 32 of the half) against their q8 blocks, each term as `dot_sub` forms it, added
// in order.
static __device__ __forceinline__ float q6k_half(const uint8_t* row, int u, const uint8_t* xq) {
    const uint8_t* blk = row + (u >> 1) * 210;
    const int n = u & 1;
    uint32_t ql[16], qh[8], sc[2];
    load_words<16>(blk + 64 * n, ql);
    load_words<8>(blk + 128 + 32 * n, qh);
    load_words<2>(blk + 192 + 8 * n, sc);
    const float d = ld_half(blk + 208);
    return sub_terms<4>(
        xq + (size_t)(4 * u) * Q8_BYTES,
        [&](int t, int (&v)[8]) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint32_t l = ql[(t & 1) * 8 + i];
                const uint32_t lo = (t >> 1) ? (l >> 4) & 0x0F0F0F0Fu : l & 0x0F0F0F0Fu;
                const uint32_t h = ((qh[i] >> (2 * t)) & 0x03030303u) << 4;
                v[i] = __vsubss4((int)(lo | h), 0x20202020);
            }
        },
        [&](int t, int2 s, float2 ds) {
            const float a = d * (float)(int8_t)byte_of(sc[t >> 1], 2 * (t & 1));
            const float a2 = d * (float)(int8_t)byte_of(sc[t >> 1], 2 * (t & 1) + 1);
            return ds.x * (a * (float)s.x + a2 * (float)s.y);
        });
}

// Unit `u` of a row of type T against the row's q8 input `xq`.
template <int T>
static __device__ __forceinline__ float dot_unit(const uint8_t* row, int u, const uint8_t* xq) {
    if (T == T_Q4_K) return q4k_pair(row, u, xq);
    if (T == T_Q6_K) return q6k_half(row, u, xq);
    Sub s;
    load_sub<T>(row, u, s);
    return dot_sub<T>(s, xq + u * Q8_BYTES);
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
