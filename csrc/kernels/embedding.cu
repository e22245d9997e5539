#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

namespace gd {

__global__ void embedding_kernel(floatX* x, const int* tokens, const floatX* wte, const floatX* wpe, const int* d_pos,
                                 int T, int C, int maxT) {
    int row = blockIdx.x;  // b*T + t
    int b = row / T, t = row % T;
    int p = *d_pos + t;
    int tok = tokens[(size_t)b * maxT + p];
    const floatX* e = wte + (size_t)tok * C;
    const floatX* q = wpe + (size_t)p * C;
    floatX* o = x + (size_t)row * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = from_f<floatX>(to_f(e[c]) + to_f(q[c]));
}

void embedding_forward(floatX* x, const int* tokens, const floatX* wte, const floatX* wpe, const int* d_pos, int B,
                       int T, int C, int maxT, cudaStream_t s) {
    embedding_kernel<<<B * T, 256, 0, s>>>(x, tokens, wte, wpe, d_pos, T, C, maxT);
    CUDA_CHECK_LAUNCH();
}

}  // namespace gd
