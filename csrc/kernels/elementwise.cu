#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

namespace gd {

__global__ void gelu_kernel(floatX* x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = from_f<floatX>(gelu_tanh(to_f(x[i])));
}

__global__ void residual_kernel(floatX* x, const floatX* y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = from_f<floatX>(to_f(x[i]) + to_f(y[i]));
}

static int grid_for(size_t n) { return (int)std::min<size_t>((n + 255) / 256, 65536); }

void gelu_forward(floatX* x, size_t n, cudaStream_t s) {
    gelu_kernel<<<grid_for(n), 256, 0, s>>>(x, n);
    CUDA_CHECK_LAUNCH();
}

void residual_forward(floatX* x, const floatX* y, size_t n, cudaStream_t s) {
    residual_kernel<<<grid_for(n), 256, 0, s>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gd
