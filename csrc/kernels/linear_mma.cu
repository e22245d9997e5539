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
// Where a block's weight tile lives (docs/perf-notes.md, v1.9):
//   RegOne: U * kWarps >= K / 32: each warp's whole share of the tile in registers, requested before the PDL wait.
//   RegStream: groups of U steps per warp in registers, double-buffered (one group before the wait, the rest after).
//   Smem: the whole 16 x K tile copied into shared memory with cp.async before the PDL wait (large K, where the
//     registers would hold only a third of it: GPT-2's MLP projection). Registers stay free, so the block can
//     sit beside the previous kernel's blocks while its copies run.
enum class WMode { RegOne, RegStream, Smem };
constexpr int kSmemPad = 32;  // row pad of the staged rows and the weight tile (elements, 64 bytes): rows g and g+1
                              // of an 8-lane phase of a 16-byte load fall in different banks

#ifndef GD_SMEM_WEIGHTS
#define GD_SMEM_WEIGHTS 1  // experiments: 0 keeps large-K tiles in registers (RegStream)
#endif
#ifndef GD_LOOP_PRODUCTS
#define GD_LOOP_PRODUCTS 1  // experiments: 0 launches one block per tile even past the resident blocks
#endif

int max_smem_optin() { return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

template <typename T>
__device__ __forceinline__ void store_out(T* p, float v) { *p = from_f<T>(v); }

size_t smem_bytes(int M, int K, bool ln, bool smem_w) {
    const int mb = M <= 8 ? 8 : 16;
    return (size_t)M * (K + kSmemPad) * sizeof(floatX) + (size_t)kWarps * kTileN * mb * sizeof(float) +
           (ln ? 2 * (size_t)K * sizeof(floatX) : 0) + (smem_w ? (size_t)kTileN * (K + kSmemPad) * sizeof(floatX) : 0);
}

// NT batch tiles of 8 rows (M <= 8 * NT). The M input rows are staged in shared memory, padded by kSmemPad per
// row; rows M..8NT-1 are zeros in registers, never stored. Each warp multiplies its share of the K steps; the
// weight tile is where kMode says. A grid smaller than the tile count (the logits product, and layer products
// with more tiles than resident blocks) loops over the tiles, staging and LayerNorm-ing the input once per block
// and fetching the next tile's weights while the current one is multiplied; otherwise one block per tile.
template <int NT, int U, WMode kMode, bool kLoop, typename OutT>
__global__ void __launch_bounds__(kThreads) linear_mma_kernel(OutT* out, const floatX* inp, const floatX* w, int M,
                                                              int N, int K, DecodeEpilogue e) {
    constexpr bool kLogits = std::is_same<OutT, float>::value;
    constexpr bool kOne = kMode != WMode::RegStream;  // no register groups loaded after the first
    extern __shared__ __align__(16) uint8_t smem_raw[];
    floatX* xs = reinterpret_cast<floatX*>(smem_raw);
    const int ldx = K + kSmemPad;
    constexpr int MB = 8 * NT;
    float* red = reinterpret_cast<float*>(smem_raw + (size_t)M * ldx * sizeof(floatX));  // [warps][16][MB]
    floatX* lnw = reinterpret_cast<floatX*>(red + kWarps * kTileN * MB);                 // [K] when e.ln_w
    floatX* lnb = lnw + K;
    floatX* ws = e.ln_w ? lnb + K : lnw;  // Smem: the weight tile [16][K + kSmemPad]
    const int ldw = K + kSmemPad;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int ntiles = N / kTileN, steps = K / 32;
    int tile = blockIdx.x;
    stamp(e.stamps, 0, 0);  // stage stamps (profile --stamps, off by default): kDecodeLinearStages
    const bool early = early_trigger_for(M);
    pdl_trigger_early(early);

    // The weights do not depend on the previous kernel: request them before waiting for it (with PDL this
    // overlaps the previous kernel's tail).
    int4 alo[kMode == WMode::Smem ? 1 : U], ahi[kMode == WMode::Smem ? 1 : U];
    auto load_group = [&](int tl, int s0) {
        if constexpr (kMode != WMode::Smem) {
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
        }
    };
    if constexpr (kMode == WMode::Smem) {  // the whole tile, on the copy path
        const int chunks_per_row = K / 8;
        const floatX* src = w + (size_t)tile * kTileN * K;
        for (int c = threadIdx.x; c < kTileN * chunks_per_row; c += kThreads) {
            const int r = c / chunks_per_row, col = (c - r * chunks_per_row) * 8;
            cp_async16(ws + (size_t)r * ldw + col, src + (size_t)r * K + col);
        }
        cp_async_commit();
    } else {
        load_group(tile, warp);
    }
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

    // Stage the M input rows (LayerNorm'd when asked; statistics from the staged copy): warp w takes rows w and
    // w + 8. Each lane requests all its vectors of a batch, of both rows, before it stores any (one L2 round trip
    // per batch, not per vector and row; a rolled loop of load-then-store took one round trip per vector: 3 at
    // K = 768). A vector past the row re-reads the row's last one, a row past M row M - 1 (predicated loads cost
    // the RegOne kernels 48 registers).
#ifdef GD_STAGE_BATCH
    constexpr int kBatch = GD_STAGE_BATCH;  // experiments: vectors per lane per round trip
#else
    constexpr int kBatch = kMode == WMode::RegOne ? 4 : 8;
#endif
#ifdef GD_STAGE_ROWS
    constexpr int kRows = GD_STAGE_ROWS;  // experiments: 1 = a warp's rows one after the other
#else
    constexpr int kRows = NT;
#endif
    for (int m0 = warp; m0 < M; m0 += kWarps * kRows) {
        float sum[kRows], sq[kRows];
#pragma unroll
        for (int r = 0; r < kRows; r++) sum[r] = sq[r] = 0.f;
        for (int k0 = lane * kVec; k0 < K; k0 += 32 * kVec * kBatch) {
            VecX v[kRows][kBatch];
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                const floatX* src = inp + (size_t)min(m0 + r * kWarps, M - 1) * K;
#pragma unroll
                for (int j = 0; j < kBatch; j++)
                    v[r][j] = *reinterpret_cast<const VecX*>(src + min(k0 + j * 32 * kVec, K - kVec));
            }
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                if (m0 + r * kWarps >= M) continue;
                floatX* dst = xs + (size_t)(m0 + r * kWarps) * ldx;
#pragma unroll
                for (int j = 0; j < kBatch; j++) {
                    if (k0 + j * 32 * kVec >= K) continue;
                    *reinterpret_cast<VecX*>(dst + k0 + j * 32 * kVec) = v[r][j];
#pragma unroll
                    for (int i = 0; i < kVec; i++) {
                        float f = to_f(v[r][j].v[i]);
                        sum[r] += f;
                        sq[r] += f * f;
                    }
                }
            }
        }
        if (!e.ln_w) continue;
#pragma unroll
        for (int r = 0; r < kRows; r++) {
            if (m0 + r * kWarps >= M) continue;
            floatX* dst = xs + (size_t)(m0 + r * kWarps) * ldx;
            float mean, rstd;
            ln_stats(warp_sum(sum[r]), warp_sum(sq[r]), K, mean, rstd);
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
    }
    if constexpr (kMode == WMode::Smem) cp_async_wait<0>();  // this thread's tile copies; the barrier: everyone's
    __syncthreads();
    stamp(e.stamps, 2, 1), stamp(e.stamps, 3, 0);

    bool row_ok[NT];  // this lane's batch row of each 8-row tile is a staged one (else its B fragment is zero)
#pragma unroll
    for (int nt = 0; nt < NT; nt++) row_ok[nt] = nt * 8 + g < M;
    auto mma_step = [&](float (&c)[NT][4], int s, int4 lo, int4 hi) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            int4 b = make_int4(0, 0, 0, 0);
            if (row_ok[nt]) b = *reinterpret_cast<const int4*>(xs + (size_t)(nt * 8 + g) * ldx + s * 32 + 8 * t);
            mma16816(c[nt], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
            mma16816(c[nt], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
        }
    };
    unsigned long long best = 0ull;  // fused argmax: this thread's best (logit, id) key so far
    while (true) {
        const int next = tile + gridDim.x;
        const bool has_next = kLoop && next < ntiles;  // block-uniform
        float c[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
        if constexpr (kMode == WMode::Smem) {
            const floatX* wlo = ws + (size_t)g * ldw + 8 * t;
#pragma unroll 4
            for (int s = warp; s < steps; s += kWarps)
                mma_step(c, s, *reinterpret_cast<const int4*>(wlo + s * 32),
                         *reinterpret_cast<const int4*>(wlo + (size_t)8 * ldw + s * 32));
        } else {
            for (int s0 = warp; s0 < steps; s0 += kWarps * U) {
                int4 cur_lo[U], cur_hi[U];
#pragma unroll
                for (int u = 0; u < U; u++) cur_lo[u] = alo[u], cur_hi[u] = ahi[u];
                if (!kOne && s0 + kWarps * U < steps)
                    load_group(tile, s0 + kWarps * U);
                else if (has_next)
                    load_group(next, warp);  // the next tile's first group, in flight during this tile's work
#pragma unroll
                for (int u = 0; u < U; u++)
                    if (s0 + u * kWarps < steps) mma_step(c, s0 + u * kWarps, cur_lo[u], cur_hi[u]);
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
            if (kLogits && e.argmax && out_n < e.V) {
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
    if (kLogits && e.argmax) {
        stamp(e.stamps, 5, 0);
        __syncthreads();  // every thread has read its sums from `red`
        argmax_finish<MB, kWarps>(e.argmax, e.ticket, e.tokens, e.d_pos, e.maxT, best, M,
                                 reinterpret_cast<unsigned long long*>(red));
        stamp(e.stamps, 5, 1);
    }
}

// kLoop: a grid of resident blocks that loop over the tiles (below); otherwise one block per tile.
template <int NT, int U, WMode kMode, bool kLoop, typename OutT>
void launch(OutT* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e, bool pdl,
            cudaStream_t s) {
    static_assert(!(kLoop && kMode == WMode::Smem), "a Smem tile is copied before the wait: one tile per block");
    auto kernel = linear_mma_kernel<NT, U, kMode, kLoop, OutT>;
    const size_t smem = smem_bytes(M, K, e.ln_w != nullptr, kMode == WMode::Smem);
    static bool configured = false;  // one instantiation, one attribute call
    if (!configured) {
        cudaFuncAttributes fa;
        CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        max_smem_optin() - (int)fa.sharedSizeBytes));
        configured = true;
    }
    const int tiles = N / kTileN;
    const int grid = kLoop ? std::min(tiles, resident_blocks((const void*)kernel, kThreads, smem)) : tiles;
    launch_pdl(pdl, kernel, dim3(grid), dim3(kThreads), smem, s, out, inp, w, M, N, K, e);
}

// Whether a tile of K columns goes to shared memory (WMode::Smem): a warp's share is more than 8 steps, the tile
// fits beside the staged rows, and the kernels trigger their dependents late (M > 8). With the early trigger
// (M <= 8) the next kernels' blocks are placed while this one runs, and a block holding 100-200 KB of shared
// memory leaves them no room on its SM: at B = 1 the whole step was 44 us slower with the tile in shared
// memory, at B = 16 55 us faster (device run 1 of the seventh session, docs/perf-notes.md v1.9).
bool use_smem_weights(int M, int K, bool ln) {
    return GD_SMEM_WEIGHTS && !early_trigger_for(M) && ceil_div(K / 32, kWarps) > 8 &&
           smem_bytes(M, K, ln, true) + kStaticSmemReserve <= (size_t)max_smem_optin();
}

template <int NT, typename OutT>
void dispatch_nt(OutT* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e, bool pdl,
                 cudaStream_t s) {
    // Weight steps in flight per warp: a warp's whole share of the tile when it has at most 8 steps
    // (K <= 2048), else the whole tile in shared memory when it fits, else a double-buffered group of 4.
    // The logits product (thousands of tiles) always loops over them on resident blocks; a layer product does
    // when its tiles outnumber the blocks that fit at once (the large GPT-2 shapes: gpt2-large's and gpt2-xl's
    // QKV and MLP products, 8 steps per warp) instead of running a second, partial wave.
    const int spw = ceil_div(K / 32, kWarps);
    if constexpr (std::is_same<OutT, float>::value) {
        if (spw <= 4) launch<NT, 4, WMode::RegOne, true>(out, inp, w, M, N, K, e, pdl, s);
        else if (spw <= 8) launch<NT, 8, WMode::RegOne, true>(out, inp, w, M, N, K, e, pdl, s);
        else launch<NT, 4, WMode::RegStream, true>(out, inp, w, M, N, K, e, pdl, s);
    } else if (spw <= 4) {
        launch<NT, 4, WMode::RegOne, false>(out, inp, w, M, N, K, e, pdl, s);
    } else if (spw <= 8) {
        const size_t smem = smem_bytes(M, K, e.ln_w != nullptr, false);
        const int resident = resident_blocks((const void*)linear_mma_kernel<NT, 8, WMode::RegOne, false, OutT>, kThreads, smem);
        if (GD_LOOP_PRODUCTS && N / kTileN > resident) launch<NT, 8, WMode::RegOne, true>(out, inp, w, M, N, K, e, pdl, s);
        else launch<NT, 8, WMode::RegOne, false>(out, inp, w, M, N, K, e, pdl, s);
    } else if (use_smem_weights(M, K, e.ln_w != nullptr)) {
        launch<NT, 4, WMode::Smem, false>(out, inp, w, M, N, K, e, pdl, s);
    } else {
        launch<NT, 4, WMode::RegStream, false>(out, inp, w, M, N, K, e, pdl, s);
    }
}

template <typename OutT>
void dispatch(OutT* out, const floatX* inp, const floatX* w, int M, int N, int K, const DecodeEpilogue& e, bool pdl,
              cudaStream_t s) {
    if (!decode_linear_supported(M, N, K, e.ln_w != nullptr))
        GD_FAIL(EXIT_CUDA, "decode_linear called with unsupported M=%d N=%d K=%d", M, N, K);
    if (e.argmax && !std::is_same<OutT, float>::value)
        GD_FAIL(EXIT_CUDA, "internal: the fused argmax is only available for the logits product");
    if (M <= 8) dispatch_nt<1>(out, inp, w, M, N, K, e, pdl, s);
    else dispatch_nt<2>(out, inp, w, M, N, K, e, pdl, s);
}

}  // namespace

bool decode_linear_supported(int M, int N, int K, bool ln) {
    if (!(has_mma16816() && M >= 1 && M <= 16 && K % 32 == 0 && N % kTileN == 0 &&
          smem_bytes(M, K, ln, false) + kStaticSmemReserve <= (size_t)max_smem_optin()))
        return false;
    // With the late trigger (M > 8), a tile streamed in more than 4 register groups after the wait is slower than
    // the fallback's cuBLAS: gpt2-xl's MLP projection (K = 6400, 7 groups) at B = 16 took the whole step from
    // 2.70 to 2.85 ms (device run 2 of the seventh session). gpt2-medium's 4 groups (K = 4096) stay fused.
    return early_trigger_for(M) || ceil_div(K / 32, kWarps) <= 16 || use_smem_weights(M, K, ln);
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

bool decode_linear_supported(int, int, int, bool) { return false; }
void decode_linear(floatX*, const floatX*, const floatX*, int, int, int, const DecodeEpilogue&, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "decode_linear is not available in FP32 builds");
}
void decode_logits(float*, const floatX*, const floatX*, int, int, int, const DecodeEpilogue&, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "decode_logits is not available in FP32 builds");
}

#endif

}  // namespace gd
