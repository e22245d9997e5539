// Warp-level pieces of the attention kernels (decode v1 and v2, kvonly, naive, prefill's fallback): one warp
// walks a range of key positions for one query with an online softmax, several keys per 16-byte load (see
// Lanes); the partial results of split keys are merged by merge_splits.
#pragma once
#include <cfloat>

#include "../common/check.h"
#include "common.cuh"

namespace gd {

// Head sizes the attention kernels support (a warp covers a cache row with 16-byte loads, a power-of-two number
// of lanes per row); the K/V store's 16-byte vectors rely on them too.
inline void require_head_size(int HS) {
    if (HS != 32 && HS != 64 && HS != 128) GD_FAIL(EXIT_INPUT, "head size %d is not supported (32, 64 or 128)", HS);
}

// Offset of element d of head h's cached key (or value) at position p of row b: the cache of a layer is
// [B][NH][maxT][HS]. Every K/V store (kv_store_kernel, the fused QKV epilogues, the v2 links) goes through it; the
// attention kernels of attention.cu compute a head's base, ((b * NH + h) * maxT) * HS, the same way by hand.
__host__ __device__ __forceinline__ size_t cache_offset(int b, int h, int p, int d, int NH, int maxT, int HS) {
    return (((size_t)b * NH + h) * maxT + p) * HS + d;
}

// A warp covers cache rows of HS elements with 16-byte loads: kLpk lanes per key row, kVec elements per lane,
// kKpl keys per warp-wide load. A lane group (the kLpk lanes of one key) reduces its dot product with shuffles;
// the groups take different keys.
template <int HS>
struct Lanes {
    static constexpr int kLpk = HS / kVec, kKpl = 32 / kLpk;
    static_assert(HS % kVec == 0 && kLpk >= 1 && kLpk <= 32 && 32 % kLpk == 0, "unsupported head size");
};

// Running softmax state of one warp: max m (the same in every lane), and the lane's share of the normaliser
// and of its kVec output dims (its key group's keys only, until warp_finish adds the groups up).
struct SoftmaxState {
    float m = -FLT_MAX, l = 0.f, acc[kVec] = {};
};

// kLoads warp-wide loads of K and V rows: kLoads * kKpl keys; lane holds 16 bytes of each.
constexpr int kLoads = 4;
struct KeyBlock {
    VecX k[kLoads], v[kLoads];
};

template <int HS>
__device__ __forceinline__ int lane_key(int i, int lane) {  // key offset of load i in this lane
    return i * Lanes<HS>::kKpl + lane / Lanes<HS>::kLpk;
}

template <int HS>
__device__ __forceinline__ const floatX* lane_row(const floatX* base, int key, int lane) {
    return base + (size_t)key * HS + (lane % Lanes<HS>::kLpk) * kVec;
}

// Loads keys j .. j + kLoads * kKpl - 1 (indices clamped to j1 - 1; the clamped ones are masked when consumed)
// of one (b, h) cache row: all loads issued before any is used, one memory round trip.
template <int HS>
__device__ __forceinline__ void load_keys(KeyBlock& kb, const floatX* k, const floatX* v, int j, int j1, int lane) {
#pragma unroll
    for (int i = 0; i < kLoads; i++) {
        const int key = min(j + lane_key<HS>(i, lane), j1 - 1);
        kb.k[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(k, key, lane));
        kb.v[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(v, key, lane));
    }
}

// Reloads the slot of key `pos` (if this lane's group holds it in the batch starting at j): it was clamped
// while loading before the previous kernel wrote it.
template <int HS>
__device__ __forceinline__ void reload_key(KeyBlock& kb, const floatX* k, const floatX* v, int j, int pos, int lane) {
#pragma unroll
    for (int i = 0; i < kLoads; i++)
        if (j + lane_key<HS>(i, lane) == pos) {
            kb.k[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(k, pos, lane));
            kb.v[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(v, pos, lane));
        }
}

// Asks L2 for cache rows [j0, j1) of K and V (one 128-byte line at a time), without waiting for them.
template <int HS>
__device__ __forceinline__ void prefetch_rows_l2(const floatX* k, const floatX* v, int j0, int j1, int lane) {
    constexpr int kRowBytes = HS * (int)sizeof(floatX);
    for (int r = j0 + lane; r < j1; r += 32)
#pragma unroll
        for (int c = 0; c < kRowBytes; c += 128) {
            const char* kr = reinterpret_cast<const char*>(k + (size_t)r * HS) + c;
            const char* vr = reinterpret_cast<const char*>(v + (size_t)r * HS) + c;
            asm volatile("prefetch.global.L2 [%0];" ::"l"(kr));
            asm volatile("prefetch.global.L2 [%0];" ::"l"(vr));
        }
}

// Online-softmax update with the batch of kb starting at key j, keys >= j1 masked out.
template <int HS>
__device__ __forceinline__ void consume_keys(SoftmaxState& st, const float (&q)[kVec], const KeyBlock& kb, int j,
                                             int j1, int lane) {
    constexpr int kLpk = Lanes<HS>::kLpk;
    float s[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; i++) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < kVec; e++) d += q[e] * to_f(kb.k[i].v[e]);
#pragma unroll
        for (int o = kLpk / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[i] = d;
    }
    float mx = st.m;
#pragma unroll
    for (int i = 0; i < kLoads; i++)
        if (j + lane_key<HS>(i, lane) < j1) mx = fmaxf(mx, s[i]);
#pragma unroll
    for (int o = kLpk; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));  // across groups
    const float corr = __expf(st.m - mx);
    st.l *= corr;
#pragma unroll
    for (int e = 0; e < kVec; e++) st.acc[e] *= corr;
#pragma unroll
    for (int i = 0; i < kLoads; i++) {
        if (j + lane_key<HS>(i, lane) < j1) {
            const float p = __expf(s[i] - mx);
            st.l += p;
#pragma unroll
            for (int e = 0; e < kVec; e++) st.acc[e] += p * to_f(kb.v[i].v[e]);
        }
    }
    st.m = mx;
}

// Adds the key groups up: afterwards every lane holds the warp's normaliser and lane l the output dims
// (l % kLpk) * kVec .. + kVec - 1.
template <int HS>
__device__ __forceinline__ void warp_finish(SoftmaxState& st) {
#pragma unroll
    for (int o = Lanes<HS>::kLpk; o < 32; o <<= 1) {
        st.l += __shfl_xor_sync(0xffffffffu, st.l, o);
#pragma unroll
        for (int e = 0; e < kVec; e++) st.acc[e] += __shfl_xor_sync(0xffffffffu, st.acc[e], o);
    }
}

// Keys j in [j0, j1) of one (b, h), kLoads * kKpl keys per memory round trip.
template <int HS>
__device__ __forceinline__ void attend_range(SoftmaxState& st, const float (&q)[kVec], const floatX* k,
                                             const floatX* v, int j0, int j1, int lane) {
    for (int j = j0; j < j1; j += kLoads * Lanes<HS>::kKpl) {
        KeyBlock kb;
        load_keys<HS>(kb, k, v, j, j1, lane);
        consume_keys<HS>(st, q, kb, j, j1, lane);
    }
}

// The lane's kVec dims of head h's query in the row qrow (its C query values first), scaled by 1/sqrt(HS).
template <int HS>
__device__ __forceinline__ void load_query(float (&q)[kVec], const floatX* qrow, int h, int lane) {
    const float scale = rsqrtf((float)HS);
    const VecX qv = *reinterpret_cast<const VecX*>(lane_row<HS>(qrow + h * HS, 0, lane));
#pragma unroll
    for (int e = 0; e < kVec; e++) q[e] = to_f(qv.v[e]) * scale;
}

// Lanes < kLpk write their kVec output dims: acc / l.
template <int HS>
__device__ __forceinline__ void store_out(floatX* o, const float (&acc)[kVec], float l, int lane) {
    if (lane >= Lanes<HS>::kLpk) return;
    VecX r;
#pragma unroll
    for (int e = 0; e < kVec; e++) r.v[e] = from_f<floatX>(acc[e] / l);
    *reinterpret_cast<VecX*>(o + lane * kVec) = r;
}


// A block's warps meet through shared memory: each saves its state (after warp_finish) with save_warp, then,
// after a barrier, one warp combines the W states with merge_warps (every lane gets the max m and normaliser l,
// lane l < kLpk the dims l * kVec ..).
template <int HS>
__device__ __forceinline__ void save_warp(const SoftmaxState& st, float* sm_m, float* sm_l, float (*sm_acc)[HS],
                                          int warp, int lane) {
    if (lane == 0) {
        sm_m[warp] = st.m;
        sm_l[warp] = st.l;
    }
    if (lane < Lanes<HS>::kLpk)
#pragma unroll
        for (int e = 0; e < kVec; e++) sm_acc[warp][lane * kVec + e] = st.acc[e];
}

template <int HS, int W>
__device__ __forceinline__ void merge_warps(const float* sm_m, const float* sm_l, const float (*sm_acc)[HS], int lane,
                                            float& m, float& l, float (&acc)[kVec]) {
    m = -FLT_MAX;
    for (int w = 0; w < W; w++) m = fmaxf(m, sm_m[w]);
    l = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; e++) acc[e] = 0.f;
    for (int w = 0; w < W; w++) {
        const float c = sm_l[w] > 0.f ? __expf(sm_m[w] - m) : 0.f;
        l += sm_l[w] * c;
        if (lane < Lanes<HS>::kLpk)
#pragma unroll
            for (int e = 0; e < kVec; e++) acc[e] += sm_acc[w][lane * kVec + e] * c;
    }
}

// Merges the partials of `used` key splits of one (row, head): base[j * (HS + 2)] = (max, normaliser, HS
// unnormalised output dims) of split j. Like the keys: lane group g takes splits g, g + kKpl, ... (its lanes one
// kVec slice of the dims each), two splits per group per L2 round trip, then the groups are combined with
// shuffles. Afterwards every lane holds the normaliser l and lane l the dims (l % kLpk) * kVec .. (as
// warp_finish leaves them), ready for store_out.
template <int HS>
__device__ __forceinline__ void merge_splits(const float* base, int used, int lane, float& l, float (&acc)[kVec]) {
    constexpr int kKpl = Lanes<HS>::kKpl, kLpk = Lanes<HS>::kLpk;
    float m = -FLT_MAX;
    l = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; e++) acc[e] = 0.f;
    for (int s0 = lane / kLpk; s0 < used; s0 += 2 * kKpl) {
        float pm[2], pl[2], pa[2][kVec];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const float* p = base + min(s0 + i * kKpl, used - 1) * (HS + 2);
            pm[i] = __ldcg(p);
            pl[i] = s0 + i * kKpl < used ? __ldcg(p + 1) : 0.f;
#pragma unroll
            for (int e = 0; e < kVec; e++) pa[i][e] = __ldcg(p + 2 + (lane % kLpk) * kVec + e);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            if (pl[i] > 0.f) {
                const float mx = fmaxf(m, pm[i]), r = __expf(m - mx), c = __expf(pm[i] - mx);
                l = l * r + pl[i] * c;
#pragma unroll
                for (int e = 0; e < kVec; e++) acc[e] = acc[e] * r + pa[i][e] * c;
                m = mx;
            }
        }
    }
#pragma unroll
    for (int o = kLpk; o < 32; o <<= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, m, o), ol = __shfl_xor_sync(0xffffffffu, l, o);
        const float mx = fmaxf(m, om), r = __expf(m - mx), c = __expf(om - mx);
        l = l * r + ol * c;
#pragma unroll
        for (int e = 0; e < kVec; e++) acc[e] = acc[e] * r + __shfl_xor_sync(0xffffffffu, acc[e], o) * c;
        m = mx;
    }
}
// The kernel instantiation for a supported head size (require_head_size).
#define GD_HS_DISPATCH(HS_, KERNEL_CALL)                                                         \
    switch (HS_) {                                                                             \
        case 32: { constexpr int HS = 32; KERNEL_CALL; break; }                               \
        case 64: { constexpr int HS = 64; KERNEL_CALL; break; }                               \
        case 128: { constexpr int HS = 128; KERNEL_CALL; break; }                             \
        default: require_head_size(HS_);                                                      \
    }

}  // namespace gd
