#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

namespace gd {

// One warp per row; two passes over the row (mean, then variance about the mean) in fp32.
__global__ void layernorm_kernel(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                                 int in_stride, int in_offset) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const floatX* x = inp + ((size_t)row * in_stride + in_offset) * C;
    float sum = 0.f;
    for (int c = lane; c < C; c += 32) sum += to_f(x[c]);
    float mean = warp_sum(sum) / C;
    float var = 0.f;
    for (int c = lane; c < C; c += 32) {
        float d = to_f(x[c]) - mean;
        var += d * d;
    }
    float rstd = rsqrtf(warp_sum(var) / C + 1e-5f);
    floatX* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = from_f<floatX>((to_f(x[c]) - mean) * rstd * to_f(w[c]) + to_f(b[c]));
}

void layernorm_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                       int in_stride, int in_offset, cudaStream_t s) {
    const int warps = 8;
    layernorm_kernel<<<ceil_div(rows, warps), warps * 32, 0, s>>>(out, inp, w, b, rows, C, in_stride, in_offset);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gd
