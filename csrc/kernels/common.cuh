// Small device helpers shared by the kernel files.
#pragma once
#include <cstdint>

#include "../common/precision.h"

namespace gd {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// LayerNorm statistics of n values from their fp32 sum and sum of squares: the one variance formula of every
// LayerNorm in the engine (layernorm.cu, the fused decode products of linear_mma.cu and link_product.cu).
__device__ __forceinline__ void ln_stats(float sum, float sumsq, int n, float& mean, float& rstd) {
    mean = sum / n;
    rstd = rsqrtf(fmaxf(sumsq / n - mean * mean, 0.f) + 1e-5f);
}

// GELU, tanh approximation (GPT-2's).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// 16 bytes of data read once (weights): non-coherent path, not kept in L1.
__device__ __forceinline__ int4 load_stream16(const void* p) {
    int4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// D += A B with mma.m16n8k16 (16-bit inputs of the build's type, fp32 accumulators): A 16 x 16 row-major
// (a0: row g, cols 2t..2t+1; a1: row g+8; a2: row g, cols 2t+8..2t+9; a3: row g+8, cols 2t+8..), B 16 x 8
// (b0: rows 2t..2t+1 of col g; b1: rows 2t+8..2t+9), C/D (c0, c1: row g, cols 2t, 2t+1; c2, c3: row g+8), with
// g = lane / 4, t = lane % 4. sm_80 and newer (has_mma16816()); 16-bit builds only.
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();  // never launched: callers check has_mma16816()
#else
#if defined(PRECISION_BF16)
#define GD_MMA_IN "bf16"
#else
#define GD_MMA_IN "f16"
#endif
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." GD_MMA_IN "." GD_MMA_IN
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#undef GD_MMA_IN
#endif
}

// Two floats as the two 16-bit halves of an mma operand register (lo in the low half).
__device__ __forceinline__ uint32_t pack_x2(float lo, float hi) {
#if defined(PRECISION_BF16)
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
#else
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
#endif
}

// cp.async (sm_80+): 16 bytes from global to shared memory on the copy path, no registers involved; the copies
// issued since the last commit form a group; wait<N> returns when at most N groups are still in flight (then a
// barrier makes other threads' copies visible). Callers check has_mma16816() (sm_80+) before launching.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gsrc) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned d = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(gsrc) : "memory");
#else
    *reinterpret_cast<int4*>(smem_dst) = *reinterpret_cast<const int4*>(gsrc);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

__host__ __device__ inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

}  // namespace gd
