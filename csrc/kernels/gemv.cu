// Small-batch products out[M,N] = inp[M,K] @ w[N,K]^T for decode (M = batch <= 16): each warp owns R output
// features, streams their weight rows once with 16-byte loads that bypass L1, and applies every row of the
// batch to them, so the weights are read from memory exactly once per step. Bias, GELU and the residual
// add are applied in the epilogue. CUDA cores only: used by FP32 builds (no 16-bit tensor-core path there),
// below sm_80, and when optimized runs with --no-fused; 16-bit builds otherwise use linear_mma.cu.
#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

namespace gd {

namespace {

constexpr int kGemvWarps = 4;

__device__ __forceinline__ VecX load_stream(const floatX* p) {
    int4 r = load_stream16(p);
    VecX v;
    *reinterpret_cast<int4*>(&v) = r;
    return v;
}

template <typename T>
__device__ __forceinline__ void store(T* p, float v) { *p = from_f<T>(v); }
template <typename T>
__device__ __forceinline__ float load(const T* p) { return to_f(*p); }

template <int MT, int R, typename OutT>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(OutT* out, const floatX* inp, const floatX* w,
                                                              const floatX* bias, int M, int N, int K, bool gelu,
                                                              bool accumulate) {
    int warp = blockIdx.x * kGemvWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    int n0 = warp * R;
    if (n0 >= N) return;
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < MT; m++) acc[r][m] = 0.f;
    for (int k = lane * kVec; k < K; k += 32 * kVec) {
        VecX wv[R];
#pragma unroll
        for (int r = 0; r < R; r++) wv[r] = load_stream(w + (size_t)min(n0 + r, N - 1) * K + k);
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m < M) {
                VecX xv = *reinterpret_cast<const VecX*>(inp + (size_t)m * K + k);
#pragma unroll
                for (int e = 0; e < kVec; e++) {
                    float x = to_f(xv.v[e]);
#pragma unroll
                    for (int r = 0; r < R; r++) acc[r][m] += to_f(wv[r].v[e]) * x;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < MT; m++)
            if (m < M) acc[r][m] = warp_sum(acc[r][m]);
    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = n0 + r;
        if (n >= N) break;
        float bv = bias ? to_f(bias[n]) : 0.f;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m < M) {
                OutT* o = out + (size_t)m * N + n;
                float v = acc[r][m] + bv;
                if (gelu) v = gelu_tanh(v);
                if (accumulate) v += load(o);
                store(o, v);
            }
        }
    }
}

template <int MT, typename OutT>
void launch_mt(OutT* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K, bool gelu,
               bool accumulate, cudaStream_t s) {
    constexpr int R = MT >= 8 ? 4 : MT >= 2 ? 2 : 1;
    int grid = ceil_div(ceil_div(N, R), kGemvWarps);
    gemv_kernel<MT, R, OutT><<<grid, kGemvWarps * 32, 0, s>>>(out, inp, w, bias, M, N, K, gelu, accumulate);
    CUDA_CHECK_LAUNCH();
}

template <typename OutT>
void launch(OutT* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K, bool gelu,
            bool accumulate, cudaStream_t s) {
    if (!gemv_supported(M, K)) GD_FAIL(EXIT_CUDA, "gemv called with unsupported M=%d K=%d", M, K);
    if (M <= 1) launch_mt<1>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
    else if (M <= 2) launch_mt<2>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
    else if (M <= 4) launch_mt<4>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
    else if (M <= 8) launch_mt<8>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
    else launch_mt<16>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
}

}  // namespace

bool gemv_supported(int M, int K) { return M >= 1 && M <= kGemvMaxM && K % kVec == 0; }

void gemv_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K, bool gelu,
                  bool accumulate, cudaStream_t s) {
    launch<floatX>(out, inp, w, bias, M, N, K, gelu, accumulate, s);
}

void gemv_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, cudaStream_t s) {
    launch<float>(out, inp, w, nullptr, M, N, K, false, false, s);
}

}  // namespace gd
