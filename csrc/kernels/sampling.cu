// Next-token choice on the GPU, one block per row, so decoding needs no host round trip per step.
// Greedy: argmax (lowest id on ties). Random: softmax(logits / temperature), optionally restricted to the
// top-k ids and to the smallest top-p nucleus (thresholds found by bisection on the logit value; ids tied
// with the threshold are kept), then inverse-CDF sampling in id order with a counter-based RNG keyed by
// (seed, row, position), so results do not depend on launch order or graph replay.
#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "../common/check.h"
#include "argmax.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "launch.cuh"

namespace gd {

constexpr int kSampleThreads = 1024;

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Block-wide reductions through shared memory (all threads get the result).
__device__ float block_sum(float v, float* sm) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sm[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? sm[lane] : 0.f;
    return warp_sum(v);
}

__device__ float block_max(float v, float* sm) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sm[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? sm[lane] : -FLT_MAX;
    return warp_max(v);
}

// Sum of exp(x - mx) over ids whose scaled logit is >= thr (count when `count`).
__device__ float mass_above(const float* row, int V, float inv_t, float mx, float thr, bool count, float* sm) {
    float acc = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float x = row[i] * inv_t;
        if (x >= thr) acc += count ? 1.f : __expf(x - mx);
    }
    return block_sum(acc, sm);
}

__global__ void sample_kernel(int* tokens, const float* logits, const int* d_pos, int T, int V, int Vp, int maxT,
                              SamplingParams p) {
    __shared__ float sm[32];
    __shared__ unsigned long long sm_k[32];
    __shared__ int chosen;
    int b = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int next = *d_pos + T;
    if (next >= maxT) return;
    const float* row = logits + (size_t)b * Vp;

    // argmax (also the fallback of the random path), by argmax_key: the tie rule of the fused argmax too
    unsigned long long best = 0ull;
#pragma unroll 8
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const unsigned long long k = argmax_key(row[i], i);
        best = k > best ? k : best;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long other = __shfl_xor_sync(0xffffffffu, best, o);
        best = other > best ? other : best;
    }
    if (lane == 0) sm_k[warp] = best;
    __syncthreads();
    if (warp == 0) {
        best = lane < blockDim.x / 32 ? sm_k[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) {
            const unsigned long long other = __shfl_xor_sync(0xffffffffu, best, o);
            best = other > best ? other : best;
        }
        if (lane == 0) chosen = argmax_id(best);
    }
    __syncthreads();
    int argmax = chosen;
    if (p.greedy) {
        if (threadIdx.x == 0) tokens[(size_t)b * maxT + next] = argmax;
        return;
    }

    float inv_t = 1.f / p.temperature;
    float mx = row[argmax] * inv_t;
    float thr = -FLT_MAX;
    if (p.top_k > 0 && p.top_k < V) {
        // largest thr with count(x >= thr) >= k
        float mn = FLT_MAX;
        for (int i = threadIdx.x; i < V; i += blockDim.x) mn = fminf(mn, row[i] * inv_t);
        float lo = -block_max(-mn, sm), hi = mx;
        for (int it = 0; it < 40; it++) {
            float mid = 0.5f * (lo + hi);
            if (mass_above(row, V, inv_t, mx, mid, true, sm) >= p.top_k) lo = mid; else hi = mid;
        }
        thr = lo;
    }
    float Z = mass_above(row, V, inv_t, mx, thr, false, sm);
    if (p.top_p < 1.f) {
        // largest thr' >= thr whose mass still reaches top_p of Z
        float lo = thr == -FLT_MAX ? mx - 100.f : thr, hi = mx;
        for (int it = 0; it < 40; it++) {
            float mid = 0.5f * (lo + hi);
            if (mass_above(row, V, inv_t, mx, mid, false, sm) >= p.top_p * Z) lo = mid; else hi = mid;
        }
        thr = fmaxf(thr, lo);
        Z = mass_above(row, V, inv_t, mx, thr, false, sm);
    }
    uint64_t h = splitmix64(p.seed ^ splitmix64(((uint64_t)b << 32) ^ (uint64_t)next));
    float u = (float)(h >> 40) * (1.0f / 16777216.0f) * Z;

    // inverse CDF in id order: each thread owns a contiguous chunk; exclusive scan of the chunk sums
    int chunk = (V + blockDim.x - 1) / blockDim.x;
    int i0 = threadIdx.x * chunk, i1 = min(V, i0 + chunk);
    float local = 0.f;
    for (int i = i0; i < i1; i++) {
        float x = row[i] * inv_t;
        if (x >= thr) local += __expf(x - mx);
    }
    float incl = local;
    for (int o = 1; o < 32; o <<= 1) {
        float n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    __syncthreads();
    if (lane == 31) sm[warp] = incl;
    if (threadIdx.x == 0) chosen = -1;
    __syncthreads();
    float warp_off = 0.f;
    for (int w = 0; w < warp; w++) warp_off += sm[w];
    float start = warp_off + incl - local;
    if (local > 0.f && u >= start && u < start + local) {
        float c = start;
        int pick = -1;
        for (int i = i0; i < i1 && pick < 0; i++) {
            float x = row[i] * inv_t;
            if (x >= thr) {
                c += __expf(x - mx);
                if (u < c) pick = i;
            }
        }
        if (pick < 0) {  // rounding: the last eligible id of the chunk
            for (int i = i1 - 1; i >= i0 && pick < 0; i--)
                if (row[i] * inv_t >= thr) pick = i;
        }
        atomicMax(&chosen, pick);
    }
    __syncthreads();
    if (threadIdx.x == 0) tokens[(size_t)b * maxT + next] = chosen >= 0 ? chosen : argmax;
}

// Greedy over several blocks per row (a row's 206 KB of fp32 logits is too much for one block at large B): each
// block takes `per_block` ids of its row (16-byte loads), folds its best argmax_key into keys[row] with one
// atomicMax; the last block to finish (atomic ticket) writes token pos+T of every row and leaves the keys and the
// ticket zeroed for the next step. Same key order, so the same token as sample_kernel's argmax.
constexpr int kArgmaxThreads = 256;

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_rows_kernel(int* tokens, const float* logits, unsigned long long* keys, int* ticket, const int* d_pos,
                       int T, int B, int V, int Vp, int maxT, int per_block) {
    __shared__ unsigned long long sm_k[kArgmaxThreads / 32];
    __shared__ bool last;
    const int b = blockIdx.y, i0 = blockIdx.x * per_block, i1 = min(V, i0 + per_block);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* row = logits + (size_t)b * Vp;
    const bool vec4 = Vp % 4 == 0;  // rows 16-byte aligned
    unsigned long long best = 0ull;
#pragma unroll 4
    for (int i = i0 + threadIdx.x * 4; i < i1; i += kArgmaxThreads * 4) {
        if (vec4 && i + 4 <= i1) {
            const float4 x = *reinterpret_cast<const float4*>(row + i);
            const unsigned long long k0 = argmax_key(x.x, i), k1 = argmax_key(x.y, i + 1);
            const unsigned long long k2 = argmax_key(x.z, i + 2), k3 = argmax_key(x.w, i + 3);
            const unsigned long long a = k0 > k1 ? k0 : k1, c = k2 > k3 ? k2 : k3, m = a > c ? a : c;
            best = m > best ? m : best;
        } else {
            for (int j = i; j < i1; j++) {
                const unsigned long long k = argmax_key(row[j], j);
                best = k > best ? k : best;
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long other = __shfl_xor_sync(0xffffffffu, best, o);
        best = other > best ? other : best;
    }
    if (lane == 0) sm_k[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kArgmaxThreads / 32; w++) best = sm_k[w] > best ? sm_k[w] : best;
        atomicMax(keys + b, best);
        __threadfence();
        last = atomicAdd(ticket, 1) == (int)(gridDim.x * gridDim.y) - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int next = *d_pos + T;
    for (int r = threadIdx.x; r < B; r += kArgmaxThreads) {
        const unsigned long long k = atomicExch(keys + r, 0ull);
        if (next < maxT) tokens[(size_t)r * maxT + next] = argmax_id(k);
    }
    if (threadIdx.x == 0) *ticket = 0;
}

void sample_tokens(int* tokens, const float* logits, const int* d_pos, int T, int B, int V, int Vp, int maxT,
                   SamplingParams p, unsigned long long* argmax_keys, cudaStream_t s) {
    if (p.greedy && argmax_keys) {
        // enough blocks for ~4 per SM, each >= 2048 ids (a multiple of 4: 16-byte loads stay aligned)
        const int sms = device_attribute(cudaDevAttrMultiProcessorCount);
        const int per_row = std::max(1, std::min(ceil_div(4L * sms, B), ceil_div(V, 2048)));
        const int per_block = ceil_div(ceil_div(V, per_row), 4) * 4;
        argmax_rows_kernel<<<dim3((unsigned)ceil_div(V, per_block), (unsigned)B), kArgmaxThreads, 0, s>>>(
            tokens, logits, argmax_keys, reinterpret_cast<int*>(argmax_keys + B), d_pos, T, B, V, Vp, maxT, per_block);
        CUDA_CHECK_LAUNCH();
        return;
    }
    sample_kernel<<<B, kSampleThreads, 0, s>>>(tokens, logits, d_pos, T, V, Vp, maxT, p);
    CUDA_CHECK_LAUNCH();
}

__global__ void set_pos_kernel(int* d_pos, int value, int add) { *d_pos = add ? *d_pos + value : value; }

void set_pos(int* d_pos, int value, cudaStream_t s) {
    set_pos_kernel<<<1, 1, 0, s>>>(d_pos, value, 0);
    CUDA_CHECK_LAUNCH();
}

void advance_pos(int* d_pos, int by, cudaStream_t s) {
    set_pos_kernel<<<1, 1, 0, s>>>(d_pos, by, 1);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gd
