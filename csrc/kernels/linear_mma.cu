// Decode products on tensor cores for 16-bit builds: out[M,N] = f(inp[M,K]) @ w[N,K]^T with M <= 16.
// One block (8 warps) owns 16 output features; its warps split K. Each mma.m16n8k16 takes a 16x16 weight
// tile as A and 16 x 8 batch rows of the input as B. K is permuted inside every 32-wide step (the sum does
// not care about the order), so that each thread's A fragment is one 16-byte load of a weight row and its
// B fragment one 16-byte load of an input row: the weights stream with full-width loads, read once per step.
// Fused: LayerNorm of the input rows (prologue), bias, GELU, residual add and the KV-cache store (epilogue).
#include <cstdint>
#include <algorithm>
#include <type_traits>

#include "../common/check.h"
#include "argmax.cuh"
#include "attention_warp.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "launch.cuh"

namespace gd {

#if !defined(PRECISION_FP32)

namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32, kTileN = 16;
constexpr size_t kStaticSmemReserve = 1024;  // room for any static shared memory of the kernel

int max_smem_optin() { return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

template <typename T>
__device__ __forceinline__ void store_out(T* p, float v) { *p = from_f<T>(v); }

// NT batch tiles of 8 rows (M <= 8 * NT). Input rows are staged in shared memory, padded by 16 bytes per
// row so the 8 rows read together fall in different banks. Each warp keeps U of its 32-wide K steps of
// weights in flight (a group); kOne: U * kWarps >= K / 32, one group holds the warp's whole share of a tile,
// requested before the PDL wait. kLoop (the logits product: thousands of tiles): a grid of resident blocks
// loops over the tiles, staging and LayerNorm-ing the input once per block and fetching the next tile's
// weights while the current one is multiplied; otherwise one block per tile.
template <int NT, int U, bool kOne, typename OutT>
__global__ void __launch_bounds__(kThreads) linear_mma_kernel(OutT* out, const floatX* inp, const floatX* w, int M,
                                                              int N, int K, DecodeEpilogue e) {
    constexpr bool kLoop = std::is_same<OutT, float>::value;
    extern __shared__ __align__(16) uint8_t smem_raw[];
    floatX* xs = reinterpret_cast<floatX*>(smem_raw);
    const int ldx = K + 8;
    constexpr int MB = 8 * NT;
    float* red = reinterpret_cast<float*>(smem_raw + (size_t)MB * ldx * sizeof(floatX));  // [warps][16][MB]
    floatX* lnw = reinterpret_cast<floatX*>(red + kWarps * kTileN * MB);                  // [K] when e.ln_w
    floatX* lnb = lnw + K;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int ntiles = N / kTileN, steps = K / 32;
    int tile = blockIdx.x;
    stamp(e.stamps, 0, 0);  // stage stamps (profile --stamps, off by default): kDecodeLinearStages
    const bool early = early_trigger_for(M);
    pdl_trigger_early(early);

    // The weights do not depend on the previous kernel: issue the first group of weight loads before
    // waiting for it (with PDL this overlaps the previous kernel's tail), then keep one group in flight.
    int4 alo[U], ahi[U];
    auto load_group = [&](int tl, int s0) {
        const floatX* wlo = w + (size_t)(tl * kTileN + g) * K + 8 * t;
        const floatX* whi = wlo + (size_t)8 * K;
#pragma unroll
        for (int u = 0; u < U; u++) {
            int s = s0 + u * kWarps;
            if (s < steps) {
                alo[u] = load_stream16(wlo + s * 32);
                ahi[u] = load_stream16(whi + s * 32);
            }
        }
    };
    load_group(tile, warp);
    // Parameters are constant too: LayerNorm weights into shared memory, this thread's bias into a register.
    if (e.ln_w)
        for (int k = threadIdx.x * kVec; k < K; k += kThreads * kVec) {
            *reinterpret_cast<VecX*>(lnw + k) = *reinterpret_cast<const VecX*>(e.ln_w + k);
            *reinterpret_cast<VecX*>(lnb + k) = *reinterpret_cast<const VecX*>(e.ln_b + k);
        }
    __syncthreads();  // the LayerNorm pass reads parameters other threads copied
    // Epilogue mapping: thread i < 16 * MB owns output (feature tile * 16 + i / MB, batch row i % MB).
    const int out_f = threadIdx.x / MB, out_m = threadIdx.x % MB;
    const bool owns_out = threadIdx.x < kTileN * MB && out_m < M;
    float bias_v = owns_out && e.bias ? to_f(e.bias[tile * kTileN + out_f]) : 0.f;
    stamp(e.stamps, 0, 1), stamp(e.stamps, 1, 0);
    pdl_wait();
    pdl_trigger_late(early);
    stamp(e.stamps, 1, 1), stamp(e.stamps, 2, 0);
    // The residual this thread adds is ready now: load it alongside the input staging.
    auto load_resid = [&](int tl) {
        const int n = tl * kTileN + out_f;
        return owns_out && e.accumulate && !(e.kcache && n >= e.C) ? to_f(out[(size_t)out_m * N + n]) : 0.f;
    };
    float resid = load_resid(tile);

    // Stage the input rows (LayerNorm'd when asked; one pass over global memory, statistics from the staged
    // copy); rows M..8NT-1 are zero.
    for (int m = warp; m < 8 * NT; m += kWarps) {
        floatX* dst = xs + (size_t)m * ldx;
        if (m >= M) {
            for (int k = lane * kVec; k < K; k += 32 * kVec) *reinterpret_cast<int4*>(dst + k) = make_int4(0, 0, 0, 0);
            continue;
        }
        const floatX* src = inp + (size_t)m * K;
        float sum = 0.f, sq = 0.f;
#pragma unroll 4
        for (int k = lane * kVec; k < K; k += 32 * kVec) {
            VecX v = *reinterpret_cast<const VecX*>(src + k);
            *reinterpret_cast<VecX*>(dst + k) = v;
#pragma unroll
            for (int j = 0; j < kVec; j++) {
                float f = to_f(v.v[j]);
                sum += f;
                sq += f * f;
            }
        }
        if (!e.ln_w) continue;
        float mean, rstd;
        ln_stats(warp_sum(sum), warp_sum(sq), K, mean, rstd);
#pragma unroll 4
        for (int k = lane * kVec; k < K; k += 32 * kVec) {  // the lane's own elements: no barrier needed
            VecX v = *reinterpret_cast<const VecX*>(dst + k);
            VecX gw = *reinterpret_cast<const VecX*>(lnw + k);
            VecX gb = *reinterpret_cast<const VecX*>(lnb + k);
#pragma unroll
            for (int j = 0; j < kVec; j++)
                v.v[j] = from_f<floatX>((to_f(v.v[j]) - mean) * rstd * to_f(gw.v[j]) + to_f(gb.v[j]));
            *reinterpret_cast<VecX*>(dst + k) = v;
        }
    }
    __syncthreads();
    stamp(e.stamps, 2, 1), stamp(e.stamps, 3, 0);

    unsigned long long best = 0ull;  // fused argmax: this thread's best (logit, id) key so far
    while (true) {
        const int next = tile + gridDim.x;
        const bool has_next = kLoop && next < ntiles;  // block-uniform
        float c[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
        for (int s0 = warp; s0 < steps; s0 += kWarps * U) {
            int4 cur_lo[U], cur_hi[U];
#pragma unroll
            for (int u = 0; u < U; u++) cur_lo[u] = alo[u], cur_hi[u] = ahi[u];
            if (!kOne && s0 + kWarps * U < steps)
                load_group(tile, s0 + kWarps * U);
            else if (has_next)
                load_group(next, warp);  // the next tile's first group, in flight during this tile's work
#pragma unroll
            for (int u = 0; u < U; u++) {
                int s = s0 + u * kWarps;
                if (s < steps) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        int4 b = *reinterpret_cast<const int4*>(xs + (size_t)(nt * 8 + g) * ldx + s * 32 + 8 * t);
                        mma16816(c[nt], cur_lo[u].x, cur_hi[u].x, cur_lo[u].y, cur_hi[u].y, b.x, b.y);
                        mma16816(c[nt], cur_lo[u].z, cur_hi[u].z, cur_lo[u].w, cur_hi[u].w, b.z, b.w);
                    }
                }
            }
        }
        // c[nt]: (feature g, batch nt*8+2t), (g, +1), (feature g+8, batch nt*8+2t), (g+8, +1)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            float* r = red + (size_t)warp * kTileN * MB;
            r[g * MB + nt * 8 + 2 * t] = c[nt][0];
            r[g * MB + nt * 8 + 2 * t + 1] = c[nt][1];
            r[(g + 8) * MB + nt * 8 + 2 * t] = c[nt][2];
            r[(g + 8) * MB + nt * 8 + 2 * t + 1] = c[nt][3];
        }
        __syncthreads();
        if (tile == (int)blockIdx.x) stamp(e.stamps, 3, 1), stamp(e.stamps, 4, 0);  // the first tile's products
        if (owns_out) {
            const int out_n = tile * kTileN + out_f;
            float v = bias_v;
#pragma unroll
            for (int wi = 0; wi < kWarps; wi++) v += red[(size_t)wi * kTileN * MB + threadIdx.x];
            if (e.gelu) v = gelu_tanh(v);
            if (e.kcache && out_n >= e.C) {  // K/V columns of the QKV product go straight into the cache
                int part = out_n / e.C, cc = out_n % e.C, hs = e.C / e.NH;
                size_t dst = cache_offset(out_m, cc / hs, *e.d_pos, cc % hs, e.NH, e.maxT, hs);
                (part == 1 ? e.kcache : e.vcache)[dst] = from_f<floatX>(v);
            } else {
                store_out(out + (size_t)out_m * N + out_n, v + resid);
            }
            if (kLoop && e.argmax && out_n < e.V) {
                unsigned long long k = argmax_key(v, out_n);
                best = k > best ? k : best;
            }
        }
        if (!has_next) break;
        tile = next;
        if (owns_out && e.bias) bias_v = to_f(e.bias[tile * kTileN + out_f]);
        resid = load_resid(tile);
        __syncthreads();  // `red` is written again by the next tile
    }
    stamp(e.stamps, 4, 1);
    if (kLoop && e.argmax) {
        stamp(e.stamps, 5, 0);
        __syncthreads();  // every thread has read its sums from `red`
        argmax_finish<MB, kWarps>(e.argmax, e.ticket, e.tokens, e.d_pos, e.maxT, best, M,
                                 reinterpret_cast<unsigned long long*>(red));
        stamp(e.stamps, 5, 1);
    }
}

template <int NT, int U, bool kOne, typename OutT>
void launch(OutT* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e, bool pdl,
            cudaStream_t s) {
    auto kernel = linear_mma_kernel<NT, U, kOne, OutT>;
    size_t smem = decode_linear_smem(M, K);
    static bool configured = false;  // one instantiation, one attribute call
    if (!configured) {
        cudaFuncAttributes fa;
        CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        max_smem_optin() - (int)fa.sharedSizeBytes));
        configured = true;
    }
    const int tiles = N / kTileN;
    // the logits product loops over its tiles on the blocks that fit on the GPU at once
    const int grid = std::is_same<OutT, float>::value
                         ? std::min(tiles, resident_blocks((const void*)kernel, kThreads, smem))
                         : tiles;
    launch_pdl(pdl, kernel, dim3(grid), dim3(kThreads), smem, s, out, inp, w, M, N, K, e);
}

template <typename OutT>
void dispatch(OutT* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e, bool pdl,
              cudaStream_t s) {
    if (!decode_linear_supported(M, N, K))
        GD_FAIL(EXIT_CUDA, "decode_linear called with unsupported M=%d N=%d K=%d", M, N, K);
    if (e.argmax && !std::is_same<OutT, float>::value)
        GD_FAIL(EXIT_CUDA, "internal: the fused argmax is only available for the logits product");
    // Weight steps in flight per warp: a warp's whole share of the tile when it has at most 8 steps
    // (K <= 2048), else a double-buffered group of 4 (GPT-2's MLP projection, K = 3072: holding all 12 steps
    // measured no faster at B = 1 and slower at B = 16, docs/perf-notes.md v1.4).
    const int spw = ceil_div(K / 32, kWarps);
    if (M <= 8) {
        if (spw <= 4) launch<1, 4, true>(out, inp, w, M, N, K, e, pdl, s);
        else if (spw <= 8) launch<1, 8, true>(out, inp, w, M, N, K, e, pdl, s);
        else launch<1, 4, false>(out, inp, w, M, N, K, e, pdl, s);
    } else {
        if (spw <= 4) launch<2, 4, true>(out, inp, w, M, N, K, e, pdl, s);
        else if (spw <= 8) launch<2, 8, true>(out, inp, w, M, N, K, e, pdl, s);
        else launch<2, 4, false>(out, inp, w, M, N, K, e, pdl, s);
    }
}

}  // namespace

size_t decode_linear_smem(int M, int K) {
    int mb = M <= 8 ? 8 : 16;
    return (size_t)mb * (K + 8) * sizeof(floatX) + (size_t)kWarps * kTileN * mb * sizeof(float) +
           2 * (size_t)K * sizeof(floatX);
}

bool decode_linear_supported(int M, int N, int K) {
    return has_mma16816() && M >= 1 && M <= 16 && K % 32 == 0 && N % kTileN == 0 && decode_linear_smem(M, K) + kStaticSmemReserve <= (size_t)max_smem_optin();
}

void decode_linear(floatX* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e,
                   bool pdl, cudaStream_t s) {
    dispatch(out, inp, w, M, N, K, e, pdl, s);
}

void decode_logits(float* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e,
                   bool pdl, cudaStream_t s) {
    dispatch(out, inp, w, M, N, K, e, pdl, s);
}

#else  // FP32 builds use the CUDA-core kernels of gemv.cu

size_t decode_linear_smem(int, int) { return 0; }
bool decode_linear_supported(int, int, int) { return false; }
void decode_linear(floatX*, const floatX*, const floatX*, int, int, int, const DecodeEpilogue&, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "decode_linear is not available in FP32 builds");
}
void decode_logits(float*, const floatX*, const floatX*, int, int, int, const DecodeEpilogue&, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "decode_logits is not available in FP32 builds");
}

#endif

}  // namespace gd
