// Launchers of the engine's kernels: one file per concern, shared by every variant.
// Positions are read from device memory (d_pos = position of the chunk's first token), so the same
// launches can be captured once in a CUDA graph and replayed for every decode step.
#pragma once
#include <cuda_runtime.h>

#include "../common/precision.h"
#include "stamps.cuh"

namespace gd {

// embedding.cu: x[b,t,:] = wte[tokens[b, pos+t]] + wpe[pos+t]
void embedding_forward(floatX* x, const int* tokens, const floatX* wte, const floatX* wpe, const int* d_pos, int B,
                       int T, int C, int maxT, cudaStream_t s);

// layernorm.cu: out row i = LN(inp row (i*in_stride + in_offset)); fp32 statistics.
void layernorm_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int rows, int C,
                       int in_stride, int in_offset, cudaStream_t s);

// matmul.cu (cuBLASLt): out[M,N] (=|+=) inp[M,K] @ w[N,K]^T (+ bias[N]); fp32 accumulation, no TF32.
// gelu: GELU (tanh) in cuBLASLt's epilogue when it has an algorithm for it; returns whether it was applied.
void matmul_init(int device);
bool matmul_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K,
                    bool accumulate, bool gelu, cudaStream_t s);
// logits[M,N] (fp32) = inp[M,K] @ w[N,K]^T
void matmul_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, cudaStream_t s);

// gemv.cu: the same products for small M (<= kGemvMaxM) streaming the weights once, with fused epilogues.
constexpr int kGemvMaxM = 16;
constexpr int kGemvFastM = 4;  // rows up to which the GEMV beats cuBLAS (the engine's fallback choice)
bool gemv_supported(int M, int K);
void gemv_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias, int M, int N, int K, bool gelu,
                  bool accumulate, cudaStream_t s);
void gemv_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, cudaStream_t s);

// linear_mma.cu (16-bit builds): decode products on tensor cores for M <= 16 with fused prologue/epilogue.
struct DecodeEpilogue {
    const floatX* bias = nullptr;
    bool gelu = false;
    bool accumulate = false;                            // out += result (residual stream)
    const floatX *ln_w = nullptr, *ln_b = nullptr;      // LayerNorm the input rows first
    floatX *kcache = nullptr, *vcache = nullptr;        // QKV: columns [C, 3C) go to the cache at *d_pos
    int* d_pos = nullptr;
    int C = 0, NH = 0, maxT = 0;
    // Logits only: greedy next token fused in. argmax: [M] zeroed keys, ticket: one zeroed int (both left zeroed
    // again); token pos+1 of row m goes to tokens[m * maxT + pos + 1] (ids < V), then *d_pos += 1.
    unsigned long long* argmax = nullptr;
    int* ticket = nullptr;
    int* tokens = nullptr;
    int V = 0;
    StageStamps stamps;  // profile --stamps (off: buf nullptr): the stages of kDecodeLinearStages
};
// linear_mma_kernel's stamped stages in kernel order (argmax: the logits product with the fused greedy token).
constexpr const char* kDecodeLinearStages = "prologue,wait,input,mma,epilogue,argmax";
// ln: the product LayerNorms its input rows (DecodeEpilogue::ln_w), whose parameters take shared memory too.
bool decode_linear_supported(int M, int N, int K, bool ln);
// pdl: launch with programmatic dependent launch (Variant::pdl).
void decode_linear(floatX* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e,
                   bool pdl, cudaStream_t s);
void decode_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e,
                   bool pdl, cudaStream_t s);

// elementwise.cu
void gelu_forward(floatX* x, size_t n, cudaStream_t s);                   // in place, tanh approximation
void residual_forward(floatX* x, const floatX* y, size_t n, cudaStream_t s);  // x += y

// attention.cu. Cache layout per layer: [B][NH][maxT][HS].
void kv_store(floatX* kcache, floatX* vcache, const floatX* qkv, const int* d_pos, int B, int T, int NH, int HS,
              int maxT, cudaStream_t s);
// Causal attention of the chunk's T queries over cache positions [0, pos+i]: one warp per query.
void attention_forward(floatX* out, const floatX* qkv, const floatX* kcache, const floatX* vcache, const int* d_pos,
                       int B, int T, int NH, int HS, int maxT, cudaStream_t s);
// One query per row (T = 1) with the keys split over blocks (or, for B > 16, over the warps of the wide kernel),
// then merged. scratch: attention_split_scratch floats, zeroed once before first use. When
// attention_decode_stores_kv(B) the kernel also stores the new token's key and value (no kv_store before it).
size_t attention_split_scratch(int B, int NH, int HS, int maxT);
bool attention_decode_stores_kv(int B);
void attention_decode_split(floatX* out, const floatX* qkv, floatX* kcache, floatX* vcache,
                            const int* d_pos, float* scratch, int B, int NH, int HS, int maxT, bool pdl,
                            cudaStream_t s);

// sampling.cu: picks token pos+T of each row from logits[B, Vp] (first V valid) and writes it to tokens.
struct SamplingParams {
    int greedy = 1;
    float temperature = 1.0f;
    int top_k = 0;
    float top_p = 1.0f;
    unsigned long long seed = 1337;
};
// argmax_keys: B + 1 zeroed slots (left zeroed): greedy then runs over several blocks per row (argmax_rows_kernel);
// nullptr: one block per row (sample_kernel).
void sample_tokens(int* tokens, const float* logits, const int* d_pos, int T, int B, int V, int Vp, int maxT,
                   SamplingParams p, unsigned long long* argmax_keys, cudaStream_t s);
void set_pos(int* d_pos, int value, cudaStream_t s);
void advance_pos(int* d_pos, int by, cudaStream_t s);

}  // namespace gd
