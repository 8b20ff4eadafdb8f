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
