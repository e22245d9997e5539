#include <cstdint>

#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

namespace gd {

// One warp per row; fp32 statistics from the row's sum and sum of squares through ln_stats (common.cuh), the
// formula of the fused decode products too. The row is read once with 16-byte loads and held in registers (at
// most V vectors per lane); rows too wide for that, or data not 16-byte aligned, go through the scalar kernel.
template <int V>
__global__ void layernorm_vec_kernel(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                                     int in_stride, int in_offset) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32, nv = C / kVec;
    if (row >= rows) return;
    const VecX* x = reinterpret_cast<const VecX*>(inp + ((size_t)row * in_stride + in_offset) * C);
    VecX v[V];
    float sum = 0.f, sq = 0.f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        const int j = lane + 32 * i;
        if (j < nv) {
            v[i] = x[j];
#pragma unroll
            for (int k = 0; k < kVec; k++) {
                const float f = to_f(v[i].v[k]);
                sum += f;
                sq += f * f;
            }
        }
    }
    float mean, rstd;
    ln_stats(warp_sum(sum), warp_sum(sq), C, mean, rstd);
    VecX* o = reinterpret_cast<VecX*>(out + (size_t)row * C);
    const VecX *wv = reinterpret_cast<const VecX*>(w), *bv = reinterpret_cast<const VecX*>(b);
#pragma unroll
    for (int i = 0; i < V; i++) {
        const int j = lane + 32 * i;
        if (j < nv) {
            const VecX gw = wv[j], gb = bv[j];
            VecX r;
#pragma unroll
            for (int k = 0; k < kVec; k++)
                r.v[k] = from_f<floatX>((to_f(v[i].v[k]) - mean) * rstd * to_f(gw.v[k]) + to_f(gb.v[k]));
            o[j] = r;
        }
    }
}

__global__ void layernorm_kernel(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                                 int in_stride, int in_offset) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const floatX* x = inp + ((size_t)row * in_stride + in_offset) * C;
    float sum = 0.f, sq = 0.f;
    for (int c = lane; c < C; c += 32) {
        const float f = to_f(x[c]);
        sum += f;
        sq += f * f;
    }
    float mean, rstd;
    ln_stats(warp_sum(sum), warp_sum(sq), C, mean, rstd);
    floatX* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_f<floatX>((to_f(x[c]) - mean) * rstd * to_f(w[c]) + to_f(b[c]));
}

static bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

void layernorm_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                       int in_stride, int in_offset, cudaStream_t s) {
    const int warps = 8, grid = ceil_div(rows, warps), nv = C / kVec;
    const bool vec = C % kVec == 0 && aligned16(out) && aligned16(inp) && aligned16(w) && aligned16(b);
    if (vec && nv <= 32 * 4)
        layernorm_vec_kernel<4><<<grid, warps * 32, 0, s>>>(out, inp, w, b, rows, C, in_stride, in_offset);
    else if (vec && nv <= 32 * 8)
        layernorm_vec_kernel<8><<<grid, warps * 32, 0, s>>>(out, inp, w, b, rows, C, in_stride, in_offset);
    else
        layernorm_kernel<<<grid, warps * 32, 0, s>>>(out, inp, w, b, rows, C, in_stride, in_offset);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gd
