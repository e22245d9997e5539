// Causal self-attention over the KV cache. Both kernels share attend_range(): one warp walks a range of
// key positions for one query with an online softmax, each lane holding D = HS/32 dimensions.
#include <cfloat>
#include <algorithm>
#include <cstdint>

#include "../common/check.h"
#include "common.cuh"
#include "kernels.cuh"
#include "pdl.cuh"

namespace gd {

__global__ void kv_store_kernel(floatX* kc, floatX* vc, const floatX* qkv, const int* d_pos, int T, int NH, int HS,
                                int maxT) {
    int row = blockIdx.x;  // b*T + t
    int b = row / T, t = row % T, p = *d_pos + t, C = NH * HS;
    const floatX* src = qkv + (size_t)row * 3 * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        int h = c / HS, d = c % HS;
        size_t dst = (((size_t)b * NH + h) * maxT + p) * HS + d;
        kc[dst] = src[C + c];
        vc[dst] = src[2 * C + c];
    }
}

void kv_store(floatX* kcache, floatX* vcache, const floatX* qkv, const int* d_pos, int B, int T, int NH, int HS,
              int maxT, cudaStream_t s) {
    kv_store_kernel<<<B * T, 256, 0, s>>>(kcache, vcache, qkv, d_pos, T, NH, HS, maxT);
    CUDA_CHECK_LAUNCH();
}

// Running softmax state of one warp: max m, normaliser l, and the lane's D accumulated output dims.
template <int D>
struct SoftmaxState {
    float m = -FLT_MAX, l = 0.f, acc[D] = {};
};

// The K and V rows of U keys in registers; each lane holds its D dimensions of every row.
template <int D, int U>
struct KeyBlock {
    floatX k[U][D], v[U][D];
};

// The lane's D consecutive elements of one cache row, in as few loads as their size allows.
template <int D>
__device__ __forceinline__ void load_dims(floatX (&dst)[D], const floatX* src) {
    constexpr int bytes = D * (int)sizeof(floatX);
    if constexpr (bytes == 4) {
        *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
    } else if constexpr (bytes == 8) {
        *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
    } else if constexpr (bytes == 16) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
#pragma unroll
        for (int d = 0; d < D; d++) dst[d] = src[d];
    }
}

// Loads keys j .. j+U-1 (indices clamped to j1-1; the clamped ones are masked when consumed). k/v point at
// position 0 of one (b, h) cache row; all 2U loads are issued before any is used: one memory round trip.
template <int D, int U>
__device__ __forceinline__ void load_keys(KeyBlock<D, U>& kb, const floatX* k, const floatX* v, int j, int j1,
                                          int lane) {
    constexpr int HS = 32 * D;
#pragma unroll
    for (int u = 0; u < U; u++) {
        int jj = min(j + u, j1 - 1);
        load_dims<D>(kb.k[u], k + (size_t)jj * HS + lane * D);
        load_dims<D>(kb.v[u], v + (size_t)jj * HS + lane * D);
    }
}

// Online-softmax update with keys j .. j+U-1 of kb, those >= j1 masked out.
template <int D, int U>
__device__ __forceinline__ void consume_keys(SoftmaxState<D>& st, const float (&q)[D], const KeyBlock<D, U>& kb,
                                             int j, int j1) {
    float s[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        s[u] = 0.f;
#pragma unroll
        for (int d = 0; d < D; d++) s[u] += q[d] * to_f(kb.k[u][d]);
    }
#pragma unroll
    for (int u = 0; u < U; u++) s[u] = warp_sum(s[u]);
    float mx = st.m;
#pragma unroll
    for (int u = 0; u < U; u++)
        if (j + u < j1) mx = fmaxf(mx, s[u]);
    float corr = __expf(st.m - mx);
    st.l *= corr;
#pragma unroll
    for (int d = 0; d < D; d++) st.acc[d] *= corr;
#pragma unroll
    for (int u = 0; u < U; u++) {
        if (j + u < j1) {
            float p = __expf(s[u] - mx);
            st.l += p;
#pragma unroll
            for (int d = 0; d < D; d++) st.acc[d] += p * to_f(kb.v[u][d]);
        }
    }
    st.m = mx;
}

// Keys j in [j0, j1) of one (b, h), 8 keys per memory round trip.
template <int D>
__device__ __forceinline__ void attend_range(SoftmaxState<D>& st, const float (&q)[D], const floatX* k,
                                             const floatX* v, int j0, int j1, int lane) {
    constexpr int U = 8;
    for (int j = j0; j < j1; j += U) {
        KeyBlock<D, U> kb;
        load_keys<D, U>(kb, k, v, j, j1, lane);
        consume_keys<D, U>(st, q, kb, j, j1);
    }
}

template <int D>
__device__ __forceinline__ void load_query(float (&q)[D], const floatX* qkv, int row, int h, int C, int lane) {
    const float scale = rsqrtf((float)(32 * D));
    const floatX* qr = qkv + (size_t)row * 3 * C + h * 32 * D + lane * D;
#pragma unroll
    for (int d = 0; d < D; d++) q[d] = to_f(qr[d]) * scale;
}

template <int D>
__global__ void attention_kernel(floatX* out, const floatX* qkv, const floatX* kc, const floatX* vc, const int* d_pos,
                                 int B, int T, int NH, int maxT) {
    constexpr int HS = 32 * D;
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= B * NH * T) return;
    int i = w % T, h = (w / T) % NH, b = w / (T * NH), C = NH * HS;
    int row = b * T + i;
    float q[D];
    load_query<D>(q, qkv, row, h, C, lane);
    size_t head = ((size_t)b * NH + h) * maxT * HS;
    SoftmaxState<D> st;
    attend_range<D>(st, q, kc + head, vc + head, 0, *d_pos + i + 1, lane);
    floatX* o = out + (size_t)row * C + h * HS + lane * D;
#pragma unroll
    for (int d = 0; d < D; d++) o[d] = from_f<floatX>(st.acc[d] / st.l);
}

// Split decode: a work item (split, h, b) of kSplitWarps warps covers keys [split*kKeysPerSplit, ...), each
// warp a slice; it writes its partial (max, normaliser, output) and the last item of a head to finish
// (counted with an atomic ticket, reset after use so graph replays start from zero) merges them all. Only the
// splits that hold keys at this position are items; the grid (sized for the GPU, fixed for graph capture)
// loops over them.
constexpr int kKeysPerSplit = 64, kSplitWarps = 4;

template <int D>
__global__ void __launch_bounds__(kSplitWarps * 32)
    attention_split_kernel(floatX* out, float* part, int* tickets, const floatX* qkv, const floatX* kc,
                           const floatX* vc, const int* d_pos, int B, int NH, int maxT, int nsplit) {
    constexpr int HS = 32 * D;
    constexpr int per_warp = kKeysPerSplit / kSplitWarps;
    const int C = NH * HS, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // Before waiting for the QKV kernel: the position (set by the previous step) and the cached keys before
    // it (written by earlier steps) do not depend on it, so the first item's loads overlap its tail. Only
    // the query and the key/value at pos come from the kernel just before.
    const int pos = *d_pos, len = pos + 1;
    const int used = min(nsplit, (len + kKeysPerSplit - 1) / kKeysPerSplit);
    const int items = used * NH * B;
    struct Item {
        int split, h, b, w0, w1, old_end;
        const floatX *kh, *vh;
    };
    auto item = [&](int it) {
        Item x;
        x.split = it % used;
        x.h = (it / used) % NH;
        x.b = it / (used * NH);
        const int j0 = x.split * kKeysPerSplit, j1 = min(len, j0 + kKeysPerSplit);
        x.w0 = j0 + warp * per_warp;
        x.w1 = min(j1, x.w0 + per_warp);
        x.old_end = min(x.w1, pos);  // keys [w0, old_end) are in the cache already
        const size_t head = ((size_t)x.b * NH + x.h) * maxT * HS;
        x.kh = kc + head;
        x.vh = vc + head;
        return x;
    };
    KeyBlock<D, per_warp> kb;
    int it = blockIdx.x;
    if (it < items) {
        Item x = item(it);
        if (x.w0 < x.old_end) load_keys<D, per_warp>(kb, x.kh, x.vh, x.w0, x.old_end, lane);
    }
    pdl_wait();
    pdl_launch_dependents();
    __shared__ float sm_m[kSplitWarps], sm_l[kSplitWarps], sm_acc[kSplitWarps][HS];
    __shared__ int ticket;
    for (bool first = true; it < items; it += gridDim.x, first = false) {
        const Item x = item(it);
        if (!first && x.w0 < x.old_end) load_keys<D, per_warp>(kb, x.kh, x.vh, x.w0, x.old_end, lane);
        float q[D];
        load_query<D>(q, qkv, x.b, x.h, C, lane);
        SoftmaxState<D> st;
        if (x.w0 < x.w1) {
#pragma unroll
            for (int u = 0; u < per_warp; u++)  // the new key, if it falls in this warp's slice
                if (x.w0 + u == pos) {
                    load_dims<D>(kb.k[u], x.kh + (size_t)pos * HS + lane * D);
                    load_dims<D>(kb.v[u], x.vh + (size_t)pos * HS + lane * D);
                }
            consume_keys<D, per_warp>(st, q, kb, x.w0, x.w1);
        }
        // merge the warps through shared memory
        if (lane == 0) {
            sm_m[warp] = st.m;
            sm_l[warp] = st.l;
        }
#pragma unroll
        for (int d = 0; d < D; d++) sm_acc[warp][lane * D + d] = st.acc[d];
        __syncthreads();
        const int bh = x.b * NH + x.h;
        float* base = part + (size_t)bh * nsplit * (HS + 2);
        if (warp == 0) {
            float m = -FLT_MAX;
            for (int w = 0; w < kSplitWarps; w++) m = fmaxf(m, sm_m[w]);
            float l = 0.f, acc[D] = {};
            for (int w = 0; w < kSplitWarps; w++) {
                float c = sm_l[w] > 0.f ? __expf(sm_m[w] - m) : 0.f;
                l += sm_l[w] * c;
#pragma unroll
                for (int d = 0; d < D; d++) acc[d] += sm_acc[w][lane * D + d] * c;
            }
            float* dst = base + x.split * (HS + 2);
            if (lane == 0) {
                dst[0] = m;
                dst[1] = l;
            }
#pragma unroll
            for (int d = 0; d < D; d++) dst[2 + lane * D + d] = acc[d];
            __threadfence();
            __syncwarp();  // every lane's partial is visible before lane 0 takes the ticket
            if (lane == 0) ticket = atomicAdd(&tickets[bh], 1);
        }
        __syncthreads();
        if (ticket == used - 1 && warp == 0) {
            // last item of this head: merge its splits, 8 at a time with all their loads issued together (one
            // L2 round trip per 8 splits, not one per split)
            if (lane == 0) tickets[bh] = 0;
            constexpr int kMerge = 8;
            float m = -FLT_MAX, l = 0.f, acc[D] = {};
            for (int s0 = 0; s0 < used; s0 += kMerge) {
                float pm[kMerge], pl[kMerge], pa[kMerge][D];
#pragma unroll
                for (int i = 0; i < kMerge; i++) {
                    const float* p = base + min(s0 + i, used - 1) * (HS + 2);
                    pm[i] = __ldcg(p);
                    pl[i] = __ldcg(p + 1);
#pragma unroll
                    for (int d = 0; d < D; d++) pa[i][d] = __ldcg(p + 2 + lane * D + d);
                }
                float mx = m;
#pragma unroll
                for (int i = 0; i < kMerge; i++)
                    if (s0 + i < used && pl[i] > 0.f) mx = fmaxf(mx, pm[i]);
                const float r = __expf(m - mx);
                l *= r;
#pragma unroll
                for (int d = 0; d < D; d++) acc[d] *= r;
                m = mx;
#pragma unroll
                for (int i = 0; i < kMerge; i++) {
                    if (s0 + i < used && pl[i] > 0.f) {
                        const float c = __expf(pm[i] - m);
                        l += pl[i] * c;
#pragma unroll
                        for (int d = 0; d < D; d++) acc[d] += pa[i][d] * c;
                    }
                }
            }
            floatX* o = out + (size_t)x.b * C + x.h * HS + lane * D;
#pragma unroll
            for (int d = 0; d < D; d++) o[d] = from_f<floatX>(acc[d] / l);
        }
        __syncthreads();  // shared memory and `ticket` are reused by the next item
    }
}

#define GD_HS_DISPATCH(HS, KERNEL_CALL)                                                              \
    switch ((HS) / 32) {                                                                           \
        case 1: { constexpr int D = 1; KERNEL_CALL; break; }                                      \
        case 2: { constexpr int D = 2; KERNEL_CALL; break; }                                      \
        case 3: { constexpr int D = 3; KERNEL_CALL; break; }                                      \
        case 4: { constexpr int D = 4; KERNEL_CALL; break; }                                      \
        default: GD_FAIL(EXIT_INPUT, "head size %d is not supported (32, 64, 96 or 128)", (HS));   \
    }

static void check_hs(int HS) {
    if (HS % 32 != 0 || HS > 128) GD_FAIL(EXIT_INPUT, "head size %d is not supported (32, 64, 96 or 128)", HS);
}

void attention_forward(floatX* out, const floatX* qkv, const floatX* kcache, const floatX* vcache, const int* d_pos,
                       int B, int T, int NH, int HS, int maxT, cudaStream_t s) {
    check_hs(HS);
    const int warps = 4;
    int grid = ceil_div((long)B * NH * T, warps);
    GD_HS_DISPATCH(HS, (attention_kernel<D><<<grid, warps * 32, 0, s>>>(out, qkv, kcache, vcache, d_pos, B, T, NH,
                                                                         maxT)));
    CUDA_CHECK_LAUNCH();
}

size_t attention_split_scratch(int B, int NH, int HS, int maxT) {
    // partials, then one int ticket per head (zeroed by the caller once)
    return (size_t)B * NH * ceil_div(maxT, kKeysPerSplit) * (HS + 2) + (size_t)B * NH;
}

void attention_decode_split(floatX* out, const floatX* qkv, const floatX* kcache, const floatX* vcache,
                            const int* d_pos, float* scratch, int B, int NH, int HS, int maxT, cudaStream_t s) {
    check_hs(HS);
    int nsplit = ceil_div(maxT, kKeysPerSplit);
    int* tickets = reinterpret_cast<int*>(scratch + (size_t)B * NH * nsplit * (HS + 2));
    // As many blocks as can be resident at once (the items of the longest context, at most): the kernel loops.
    auto grid_for = [&](const void* kernel) {
        int dev = 0, sms = 0, per_sm = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSplitWarps * 32, 0));
        return std::min((long)nsplit * NH * B, (long)sms * std::max(per_sm, 1));
    };
    GD_HS_DISPATCH(HS, (launch_pdl(attention_split_kernel<D>,
                                   dim3((unsigned)grid_for((const void*)attention_split_kernel<D>)),
                                   dim3(kSplitWarps * 32), 0, s, out, scratch, tickets, qkv, kcache, vcache, d_pos, B,
                                   NH, maxT, nsplit)));
}

}  // namespace gd
