// The build's floating-point type for weights and activations, chosen by -DPRECISION_{FP32,FP16,BF16}.
// Host code sees only the bit width and name; device code gets the CUDA type and conversions.
#pragma once
#include <cstdint>

#if defined(PRECISION_FP32)
#define GD_PRECISION_NAME "FP32"
#define GD_FLOATX_BYTES 4
#elif defined(PRECISION_FP16)
#define GD_PRECISION_NAME "FP16"
#define GD_FLOATX_BYTES 2
#elif defined(PRECISION_BF16)
#define GD_PRECISION_NAME "BF16"
#define GD_FLOATX_BYTES 2
#else
#error "define one of PRECISION_FP32, PRECISION_FP16, PRECISION_BF16"
#endif

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <library_types.h>
#if defined(PRECISION_FP32)
typedef float floatX;
#define GD_CUDA_R CUDA_R_32F
#elif defined(PRECISION_FP16)
typedef __half floatX;
#define GD_CUDA_R CUDA_R_16F
#else
typedef __nv_bfloat16 floatX;
#define GD_CUDA_R CUDA_R_16BF
#endif

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// 16-byte vector of floatX: 8 halves/bf16s or 4 floats.
constexpr int kVec = 16 / sizeof(floatX);
struct alignas(16) VecX {
    floatX v[kVec];
};
#endif
