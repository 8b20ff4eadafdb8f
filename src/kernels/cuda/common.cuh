// Shared by mlcli's CUDA kernels: ggml type ids, warp and block reductions, unaligned
// loads, the q8 activation blocks (quant_warp) and ggml's RoPE angles.

#pragma once

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


static __device__ __forceinline__ float f16r(float x) { return __half2float(__float2half(x)); }

// Sum over the whole block in f64 (blockDim.x a multiple of 32); every thread gets it. ggml's
// RMSNorm sums its f32 squares in f64, where they are exact and the order hardly matters.
static __device__ double block_sum_f64(double v) {
    __shared__ double part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// 1 / sqrtf(mean of the squares + eps), the mean cast to f32 as ggml's rms_norm does.
static __device__ __forceinline__ float rms_scale(double ss, int k, float eps) {
    const float mean = (float)(ss / (double)k);
    return 1.0f / sqrtf(mean + eps);
}

// exp(x) as ggml's vectorized ggml_v_expf computes it (round by 1.5·2^23, the remainder in
// two fused steps, a degree-5 polynomial of fused multiply-adds, scaled by 2^n), so SiLU
// equals the CPU build's.
static __device__ __forceinline__ float ggml_expf(float x) {
    const float round = 12582912.0f;
    const float z = fmaf(x, __int_as_float(0x3fb8aa3b), round);
    const float n = __fsub_rn(z, round);
    float b = fmaf(-n, __int_as_float(0x3f317200), x);
    b = fmaf(-n, __int_as_float(0x35bfbe8e), b);
    const float u = __fmul_rn(b, b);
    float j = fmaf(__int_as_float(0x3c072010), b, __int_as_float(0x3d2b9f17));
    j = fmaf(j, u, fmaf(__int_as_float(0x3e2aaf33), b, __int_as_float(0x3efffedb)));
    j = fmaf(j, u, fmaf(__int_as_float(0x3f7ffff6), b, 1.0f));
    if (n > 127.0f) return INFINITY;
    if (n < -126.0f) return 0.0f;
    return __fmul_rn(j, __int_as_float(((int)n + 127) << 23));
}

// The gated activations as ggml computes them on the CPU: SiLU with ggml_v_expf; GELU (tanh)
// through its f16 table: the input rounded to f16, the f32 formula, the result rounded to f16,
// 0 below -10 and the identity above 10.
static __device__ __forceinline__ float act_silu(float x) {
    return __fdiv_rn(x, __fadd_rn(1.0f, ggml_expf(-x)));
}

static __device__ __forceinline__ float act_gelu(float v) {
    if (v <= -10.0f) return 0.0f;
    if (v >= 10.0f) return v;
    const float x = f16r(v);
    const float inner = fmaf(__fmul_rn(0.044715f, x), x, 1.0f);
    const float t = tanhf(__fmul_rn(__fmul_rn(0.7978846f, x), inner));
    return f16r(__fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, t)));
}

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
    const float d = amax / 127.0f;
    dst[8 + lane] = (uint8_t)(int8_t)q;
    if (lane == 0) {
        // Stored as f16, the sum from the unrounded scale (ggml's quantize_row_q8_1).
        ((float*)dst)[0] = f16r(d);
        ((float*)dst)[1] = f16r(__fmul_rn(d, (float)isum));
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
