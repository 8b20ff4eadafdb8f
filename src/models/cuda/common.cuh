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
