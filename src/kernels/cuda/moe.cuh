// Mixtures of experts: the router and its top-k on the device, then each token's chosen
// experts' gate/up products with the gated activation, and their down products summed with
// the routing weights into the residual stream. Expert matrices are found through tables of
// device addresses (one per projection) indexed by the ids the router wrote, so nothing goes
// back to the host and a one-token step stays one CUDA graph.

#pragma once

#define MOE_MAX_EXPERTS 1024
#define MOE_MAX_USED 32  // also the lanes of a warp: moe_down gives each slot one

// Router logits, a warp per (token, expert): logits[tok][e] = router[e] · x[tok] in f32 (`x`
// the normed f32 input, `router` (n_exp, hidden), hidden a multiple of 4). Spread over many
// blocks, so the router's rows stream from memory in parallel. Grid: (n_exp / 4 rounded up,
// tokens); 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    moe_logits(const float* x, const float* router, int hidden, int n_exp, float* logits) {
    const int e = blockIdx.x * 4 + (threadIdx.x >> 5), tok = blockIdx.y, lane = threadIdx.x & 31;
    if (e >= n_exp) return;
    const float4* r = (const float4*)(router + (size_t)e * hidden);
    const float4* xr = (const float4*)(x + (size_t)tok * hidden);
    float acc = 0.0f;
#pragma unroll 4
    for (int j = lane; j < hidden / 4; j += 32) {
        const float4 a = r[j], b = xr[j];
        acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
    }
    acc = warp_sum(acc);
    if (lane == 0) logits[(size_t)tok * n_exp + e] = acc;
}

// Routing, a block per token: the `k` largest logits (ties to the lower index) and their
// weights: mode 0 a softmax over all logits, the chosen renormalized to sum 1 when `renorm`;
// mode 1 a softmax over the chosen logits. Each expert's rank is the count of logits that beat
// its own (greater, or equal at a lower index), every thread counting for its experts in one
// pass, so the chosen are those ranked below k without k rounds of a warp's argmax (each a
// chain of shuffles). A NaN logit ranks with -inf. The chosen are written in expert order
// (`ids`, `wts`: [tok][k]), so a prompt's weighted sums (`moe_combine`) add up in the order
// the CPU build adds them. Grid: tokens; 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    moe_topk(const float* logits, int n_exp, int k, int mode, int renorm, int* ids, float* wts) {
    __shared__ float l[MOE_MAX_EXPERTS];
    __shared__ float chosen_l[MOE_MAX_USED];
    __shared__ int chosen_e[MOE_MAX_USED];
    __shared__ float top_mx, top_total;
    const int tok = blockIdx.x, lane = threadIdx.x & 31;
    const float* lr = logits + (size_t)tok * n_exp;
    for (int e = threadIdx.x; e < n_exp; e += blockDim.x) {
        const float x = lr[e];
        l[e] = isnan(x) ? -INFINITY : x;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        float mx = -INFINITY;
        for (int e = lane; e < n_exp; e += 32) mx = fmaxf(mx, l[e]);
        mx = warp_max(mx);
        float total = 0.0f;
        for (int e = lane; e < n_exp; e += 32) total += expf(l[e] - mx);
        total = warp_sum(total);
        if (lane == 0) {
            top_mx = mx;
            top_total = total;
        }
    }
    for (int e = threadIdx.x; e < n_exp; e += blockDim.x) {
        const float x = l[e];
        int rank = 0;
#pragma unroll 8
        for (int j = 0; j < n_exp; j++) {
            const float y = l[j];
            rank += (y > x) | ((y == x) & (j < e));
        }
        if (rank < k) {
            chosen_e[rank] = e;
            chosen_l[rank] = x;
        }
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    const float mx = top_mx, total = top_total;
    int sel[MOE_MAX_USED];
    float w[MOE_MAX_USED];
    for (int s = 0; s < k; s++) {
        sel[s] = chosen_e[s];
        w[s] = chosen_l[s];
    }
    if (mode == 0) {
        float kept = 0.0f;
        for (int s = 0; s < k; s++) {
            w[s] = expf(w[s] - mx) / total;
            kept += w[s];
        }
        if (renorm)
            for (int s = 0; s < k; s++) w[s] /= kept;
    } else {
        const float top = w[0];
        float sum = 0.0f;
        for (int s = 0; s < k; s++) {
            w[s] = expf(w[s] - top);
            sum += w[s];
        }
        for (int s = 0; s < k; s++) w[s] /= sum;
    }
    // Expert order: insertion sort of the k pairs by id.
    for (int s = 1; s < k; s++)
        for (int q = s; q > 0 && sel[q - 1] > sel[q]; q--) {
            const int ti = sel[q];
            sel[q] = sel[q - 1];
            sel[q - 1] = ti;
            const float tw = w[q];
            w[q] = w[q - 1];
            w[q - 1] = tw;
        }
    for (int s = 0; s < k; s++) {
        ids[tok * k + s] = sel[s];
        wts[tok * k + s] = w[s];
    }
}

// Gate/up with the gated activation for every (token, slot) pair `p = blockIdx.y` (token
// p / k): expert ids[p]'s matrices from the tables, the token's q8 input, the result as q8
// into pair p's row of `out` (ffn / 32 blocks). Grid: (ffn / 32, tokens · k); 1024 threads.
extern "C" __global__ void __launch_bounds__(1024)
    moe_glu(const unsigned long long* gate_tab, const unsigned long long* up_tab, int tg, int tu,
            const int* ids, int k_used, const uint8_t* xq, int k, int gelu, uint8_t* out) {
    const int p = blockIdx.y, tok = p / k_used, e = ids[p];
    const size_t ffn_blocks = gridDim.x;
    glu_rows((const uint8_t*)gate_tab[e], (const uint8_t*)up_tab[e], tg, tu,
             xq + (size_t)tok * (k / QK) * Q8_BYTES, k, gelu,
             out + (size_t)p * ffn_blocks * Q8_BYTES);
}

// Down products of each token's experts, weighted and summed, added to the residual row:
// h[tok][row] += sum over slots s of wts[p] · down_{ids[p]}[row] · out_p (p = tok · k + s).
// A warp per row, its lanes taking the (slot, unit) pairs of all slots in turn, so every
// load of the row is independent of the others (a loop over the slots, a warp's sum each,
// waited on memory k times in a row). Grid: (hidden / 4, tokens); 128 threads.
template <int T>
static __device__ __forceinline__ float down_slots(const unsigned long long* mats,
                                                   const float* wt, int k_used, int nsub,
                                                   int row, const uint8_t* xq) {
    const int bytes = row_bytes(T, nsub), n = units<T>(nsub), pairs = k_used * n;
    float acc = 0.0f;
#pragma unroll 4
    for (int i = threadIdx.x & 31; i < pairs; i += 32) {
        const int s = i / n, u = i - s * n;
        const uint8_t* r = (const uint8_t*)mats[s] + (size_t)row * bytes;
        acc += wt[s] * dot_unit<T>(r, u, xq + (size_t)s * nsub * Q8_BYTES);
    }
    return warp_sum(acc);
}

extern "C" __global__ void __launch_bounds__(128)
    moe_down(const unsigned long long* down_tab, int td, const int* ids, const float* wts,
             int k_used, const uint8_t* xq, int f, int hidden, float* h) {
    __shared__ unsigned long long mats[MOE_MAX_USED];
    __shared__ float wt[MOE_MAX_USED];
    const int row = blockIdx.x * 4 + (threadIdx.x >> 5), tok = blockIdx.y;
    if (threadIdx.x < k_used) {
        const int p = tok * k_used + threadIdx.x;
        mats[threadIdx.x] = down_tab[ids[p]];
        wt[threadIdx.x] = wts[p];
    }
    __syncthreads();
    if (row >= hidden) return;
    const int nsub = f / QK;
    const uint8_t* x = xq + (size_t)tok * k_used * nsub * Q8_BYTES;
    float acc;
    switch (td) {
        case T_Q4_0: acc = down_slots<T_Q4_0>(mats, wt, k_used, nsub, row, x); break;
        case T_Q4_1: acc = down_slots<T_Q4_1>(mats, wt, k_used, nsub, row, x); break;
        case T_Q5_0: acc = down_slots<T_Q5_0>(mats, wt, k_used, nsub, row, x); break;
        case T_Q8_0: acc = down_slots<T_Q8_0>(mats, wt, k_used, nsub, row, x); break;
        case T_Q4_K: acc = down_slots<T_Q4_K>(mats, wt, k_used, nsub, row, x); break;
        default: acc = down_slots<T_Q6_K>(mats, wt, k_used, nsub, row, x); break;
    }
    if ((threadIdx.x & 31) == 0) h[(size_t)tok * hidden + row] += acc;
}

// ---------------------------------------------------------------------------------------
// Prompts: the (token, slot) pairs grouped by expert, then each expert's products over its
// pairs in the 64 × 64 tiles of `mmq`, so an expert's weights are read once per 64 pairs
// instead of once per pair.

// Zeroes `n` counters.
extern "C" __global__ void moe_zero(int* counts, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) counts[i] = 0;
}

// Appends each pair p < pairs to its expert's list: list[e * cap + i] for i < counts[e]. The
// order within a list is arbitrary; every output row depends only on its own pair.
extern "C" __global__ void moe_group(const int* ids, int pairs, int cap, int* counts, int* list) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const int e = ids[p];
    list[(size_t)e * cap + atomicAdd(&counts[e], 1)] = p;
}

// Expert blockIdx.z's products over its pairs: rows `rows` of the matrices tab0[e] (and
// tab1[e] when tab1 is set: gate and up side by side), pair p reading q8 input row p / div
// and writing row p of y0 (y1). Grid: (64-row tiles of one or two matrices, pair groups of 64
// up to the longest list, experts); 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    mmq_moe(const unsigned long long* tab0, const unsigned long long* tab1, int t0, int t1,
            int rows, float* y0, float* y1, const int* counts, const int* list, int cap, int div,
            const uint8_t* xq, int k) {
    const int e = blockIdx.z, cnt = counts[e];
    if ((int)blockIdx.y * 64 >= cnt) return;
    const int tiles = (rows + 63) / 64, second = (int)blockIdx.x >= tiles;
    if (second && !tab1) return;
    const Pick m = {(const uint8_t*)(second ? tab1[e] : tab0[e]), second ? t1 : t0, rows,
                    second ? (int)blockIdx.x - tiles : (int)blockIdx.x, second ? y1 : y0,
                    nullptr};
    mmq_tile(m, xq, k, cnt, 0.0f, Rows{list + (size_t)e * cap, div});
}

// h[tok] += the weighted sum of the token's pairs' down outputs y[p] (pairs in expert order).
// Grid: (hidden / 256 rounded up, tokens); 256 threads.
extern "C" __global__ void moe_combine(const float* y, const float* wts, int k_used, int hidden,
                                       float* h) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, tok = blockIdx.y;
    if (j >= hidden) return;
    float acc = 0.0f;
    for (int s = 0; s < k_used; s++) {
        const int p = tok * k_used + s;
        acc += wts[p] * y[(size_t)p * hidden + j];
    }
    h[(size_t)tok * hidden + j] += acc;
}
