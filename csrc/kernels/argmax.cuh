// The argmax of the engine: one key order (argmax_key: the highest logit, the lowest id among equal ones) for
// sample_kernel (sampling.cu) and the greedy argmax fused into a logits product (linear_mma.cu, link_product.cu).
#pragma once
#include <cstdint>

namespace gd {

// (value, id) as one 64-bit key whose unsigned order is the value's order, then the lower id: atomicMax keeps
// the argmax with sample_kernel's tie rule. 0 is below every real key.
__device__ __forceinline__ unsigned long long argmax_key(float v, int id) {
    uint32_t u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (uint32_t)~id;
}

// The id of a key made by argmax_key.
__device__ __forceinline__ int argmax_id(unsigned long long key) { return (int)~(uint32_t)key; }

// Greedy decoding fused into the logits product: `best` is the thread's best key over the tiles it owned. The
// block's best per row goes into argmax[row] with one atomicMax; the last block to finish (atomic ticket)
// writes token pos+1 of each row, resets the maxima and the ticket for the next step and advances the position
// by one. Called by all threads of a block of kWarps warps in which thread i holds row i % MB; `scratch`
// (kWarps * MB keys) must be free.
template <int MB, int kWarps>
__device__ void argmax_finish(unsigned long long* argmax, int* ticket, int* tokens, int* d_pos, int maxT,
                              unsigned long long best, int M, unsigned long long* scratch) {
    __shared__ int last;
    // threads i and i + MB hold the same row: fold the warp's features for each row
#pragma unroll
    for (int o = MB; o < 32; o <<= 1) {
        unsigned long long other = __shfl_xor_sync(0xffffffffu, best, o);
        best = other > best ? other : best;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane < MB) scratch[warp * MB + lane] = best;
    __syncthreads();
    if (threadIdx.x < MB && threadIdx.x < M) {
        unsigned long long b = 0ull;
        for (int w = 0; w < kWarps; w++) b = scratch[w * MB + threadIdx.x] > b ? scratch[w * MB + threadIdx.x] : b;
        atomicMax(argmax + threadIdx.x, b);
        __threadfence();
    }
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(ticket, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int pos = *d_pos;
    if (threadIdx.x < M) {
        unsigned long long b = atomicExch(argmax + threadIdx.x, 0ull);
        if (pos + 1 < maxT) tokens[(size_t)threadIdx.x * maxT + pos + 1] = argmax_id(b);
    }
    if (threadIdx.x == 0) {
        *ticket = 0;
        *d_pos = pos + 1;
    }
}

}  // namespace gd
