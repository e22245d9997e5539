// Matrix products through cuBLASLt. Row-major out[M,N] = inp[M,K] @ w[N,K]^T is, in cuBLAS's column-major
// terms, D (N x M) = A^T B with A = w seen as K x N and B = inp seen as K x M.
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"

#define CUBLAS_CHECK(call)                                                                                 \
    do {                                                                                                   \
        cublasStatus_t st_ = (call);                                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                                  \
            GD_FAIL(::gd::EXIT_CUDA, "cuBLAS error %d (%s) at %s:%d", (int)st_, cublasLtGetStatusString(st_), \
                    __FILE__, __LINE__);                                                                   \
    } while (0)

namespace gd {

namespace {

cublasLtHandle_t g_handle = nullptr;
void* g_workspace = nullptr;
constexpr size_t kWorkspaceBytes = 32u << 20;

struct Plan {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c, d;
    cublasLtMatmulAlgo_t algo;
    bool ok = false;  // cuBLASLt had an algorithm (a GELU epilogue may have none; callers then fall back)
};
// Key: M, N, K, has bias, accumulate, fp32 output, GELU epilogue.
std::map<std::tuple<int, int, int, bool, bool, bool, bool>, Plan> g_plans;

const Plan& get_plan(int M, int N, int K, bool bias, bool accumulate, bool f32_out, bool gelu = false) {
    auto key = std::make_tuple(M, N, K, bias, accumulate, f32_out, gelu);
    auto it = g_plans.find(key);
    if (it != g_plans.end()) return it->second;
    if (!g_handle) GD_FAIL(EXIT_CUDA, "matmul_init() was not called");
    Plan p;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    // cuBLASLt's GELU is the tanh approximation, GPT-2's (as gelu_tanh in common.cuh)
    cublasLtEpilogue_t epi = gelu ? (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                  : (bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (bias) {
        cudaDataType_t bt = GD_CUDA_R;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    cudaDataType_t out_t = f32_out ? CUDA_R_32F : GD_CUDA_R;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, GD_CUDA_R, K, N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, GD_CUDA_R, K, M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_t, N, M, N));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, out_t, N, M, N));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_handle, p.desc, p.a, p.b, p.c, p.d, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (gelu && (st != CUBLAS_STATUS_SUCCESS || found == 0)) return g_plans.emplace(key, p).first->second;  // !ok
    CUBLAS_CHECK(st);
    if (found == 0)
        GD_FAIL(EXIT_CUDA, "cuBLASLt has no algorithm for M=%d N=%d K=%d (bias=%d accumulate=%d) in %s", M, N, K,
                (int)bias, (int)accumulate, GD_PRECISION_NAME);
    p.algo = res.algo;
    p.ok = true;
    return g_plans.emplace(key, p).first->second;
}

void run(const Plan& p, void* out, const floatX* inp, const floatX* w, const floatX* bias, bool accumulate,
         cudaStream_t s) {
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    CUBLAS_CHECK(cublasLtMatmul(g_handle, p.desc, &alpha, w, p.a, inp, p.b, &beta, out, p.c, out, p.d, &p.algo,
                                g_workspace, kWorkspaceBytes, s));
}

}  // namespace

void matmul_init(int /*device*/) {
    if (g_handle) return;
    CUBLAS_CHECK(cublasLtCreate(&g_handle));
    CUDA_CHECK(cudaMalloc(&g_workspace, kWorkspaceBytes));
}

bool matmul_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K,
                    bool accumulate, bool gelu, cudaStream_t s) {
    if (gelu) {
        const Plan& p = get_plan(M, N, K, bias != nullptr, accumulate, false, true);
        if (p.ok) {
            run(p, out, inp, w, bias, accumulate, s);
            return true;
        }
    }
    run(get_plan(M, N, K, bias != nullptr, accumulate, false), out, inp, w, bias, accumulate, s);
    return false;
}

void matmul_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, cudaStream_t s) {
    run(get_plan(M, N, K, false, false, true), out, inp, w, nullptr, false, s);
}

}  // namespace gd
