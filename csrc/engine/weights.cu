#include "weights.h"

#include <vector>

#include "../common/check.h"

namespace gd {

void* device_alloc(size_t bytes, const char* what) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        GD_FAIL(EXIT_CUDA, "cannot allocate %.1f MiB for %s (%s); %.1f MiB free of %.1f MiB", bytes / 1048576.0, what,
                cudaGetErrorString(e), free_b / 1048576.0, total_b / 1048576.0);
    }
    return p;
}

void check_fits(size_t bytes, const char* what) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (bytes > free_b)
        GD_FAIL(EXIT_CUDA, "%s needs %.1f MiB of device memory but only %.1f MiB of %.1f MiB are free", what,
                bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

Weights load_weights(const std::string& path, ModelConfig* cfg) {
#if defined(PRECISION_FP32)
    const DType target = DType::F32;
#elif defined(PRECISION_FP16)
    const DType target = DType::F16;
#else
    const DType target = DType::BF16;
#endif
    std::vector<uint8_t> host;
    CheckpointHeader h = load_checkpoint(path, target, host);
    *cfg = h.cfg;
    size_t counts[kNumParamTensors], offsets[kNumParamTensors], total = 0;
    param_counts(h.cfg, counts);
    for (int i = 0; i < kNumParamTensors; i++) {  // 256-byte aligned tensors: vector loads stay aligned
        offsets[i] = total;
        total = align_up(total + counts[i] * sizeof(floatX), 256);
    }
    check_fits(total, "the model weights");
    Weights w;
    w.bytes = total;
    w.base = device_alloc(total, "the model weights");
    floatX** ptrs[kNumParamTensors] = {&w.wte, &w.wpe, &w.ln1w, &w.ln1b, &w.qkvw, &w.qkvb, &w.attprojw, &w.attprojb,
                                       &w.ln2w, &w.ln2b, &w.fcw, &w.fcb, &w.fcprojw, &w.fcprojb, &w.lnfw, &w.lnfb};
    size_t src = 0;
    for (int i = 0; i < kNumParamTensors; i++) {
        *ptrs[i] = reinterpret_cast<floatX*>(static_cast<char*>(w.base) + offsets[i]);
        CUDA_CHECK(cudaMemcpy(*ptrs[i], host.data() + src, counts[i] * sizeof(floatX), cudaMemcpyHostToDevice));
        src += counts[i] * sizeof(floatX);
    }
    return w;
}

}  // namespace gd
