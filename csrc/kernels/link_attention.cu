// Decode v2 attention link (links.cuh): one query per row over the KV cache, each (row, head)'s keys split over
// blocks (AttnSplits). A block takes an item (split j, head h, row b). Before its PDL wait it copies the item's
// cached keys and values before `pos` (written by earlier steps) into shared memory with cp.async, kChunk keys at
// a time; after the wait only the query and the key/value at pos (both from the QKV link just before) are left
// to load. Each of the 8 warps walks one batch of the chunk with the online softmax of attention_warp.cuh, the
// warps merge in shared memory, and the item's partial (max, normaliser, unnormalised output) goes to `part`;
// the attention projection merges the splits as it stages its input (no ticket, no second pass here).
#include <algorithm>

#include "../common/check.h"
#include "attention_warp.cuh"
#include "common.cuh"
#include "launch.cuh"
#include "links.cuh"

namespace gd {

namespace {

constexpr int kAW = 8;  // warps per block

// In-kernel stages (stamps.cuh): prologue (copies of the first chunk issued), wait, the first item's keys, merge.
enum Stage { kStPrologue, kStWait, kStKeys, kStMerge };

template <int HS>
struct Chunk {
    static constexpr int kBatch = kLoads * Lanes<HS>::kKpl;  // keys per warp-wide batch
    static constexpr int kKeys = kAW * kBatch;               // keys per chunk: one batch per warp
    static constexpr size_t kBuf = (size_t)kKeys * HS;                     // floatX of K (or V) per buffer
    static constexpr size_t kBytes = 2 * 2 * kBuf * sizeof(floatX);        // two buffers of K and V
};

// Copies keys [from, to) of one (row, head) into the chunk that starts at key c0 (rows at key - c0).
template <int HS>
__device__ __forceinline__ void issue_keys(floatX* ks, floatX* vs, const floatX* kh, const floatX* vh, int c0, int from,
                                           int to) {
    constexpr int kLpk = Lanes<HS>::kLpk;
    for (int q = threadIdx.x; q < (to - from) * kLpk; q += kAW * 32) {
        const int key = from + q / kLpk, d = (q % kLpk) * kVec;
        cp_async16(ks + (size_t)(key - c0) * HS + d, kh + (size_t)key * HS + d);
        cp_async16(vs + (size_t)(key - c0) * HS + d, vh + (size_t)key * HS + d);
    }
}

template <int HS>
__global__ void __launch_bounds__(kAW * 32) link_attention_kernel(AttnLinkArgs a) {
    constexpr int kBatch = Chunk<HS>::kBatch, kKeys = Chunk<HS>::kKeys;
    constexpr size_t kBuf = Chunk<HS>::kBuf;
    extern __shared__ __align__(16) uint8_t smem[];
    floatX* kbuf = reinterpret_cast<floatX*>(smem);  // [2][kKeys][HS], then V the same
    floatX* vbuf = kbuf + 2 * kBuf;
    __shared__ float sm_m[kAW], sm_l[kAW], sm_acc[kAW][HS];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, C = a.NH * HS;
    stamp(a.stamps, kStPrologue, 0);
    if (!a.late_trigger) pdl_launch_dependents();
    // The position (set by the previous step) and the cached keys before it do not depend on the QKV link.
    const int pos = *a.d_pos, len = pos + 1;
    int span;
    const int used = attn_splits(a.as, len, &span);
    const int items = a.B * a.NH * used;
    struct Item {
        int j, h, b, k0, k1;
        const floatX *kh, *vh;
    };
    auto item = [&](int it) {
        Item x;
        x.j = it % used;
        x.h = (it / used) % a.NH;
        x.b = it / (used * a.NH);
        x.k0 = x.j * span;
        x.k1 = min(len, x.k0 + span);
        const size_t head = cache_offset(x.b, x.h, 0, 0, a.NH, a.maxT, HS);
        x.kh = a.kc + head;
        x.vh = a.vc + head;
        return x;
    };
    // Chunk c of an item goes to buffer c % 2; two chunks are in flight. The first item's first two chunks are
    // copied before the wait, without the key at pos.
    auto issue_chunk = [&](const Item& x, int c, int limit) {
        const int c0 = x.k0 + c * kKeys;
        if (c0 < x.k1)
            issue_keys<HS>(kbuf + (c % 2) * kBuf, vbuf + (c % 2) * kBuf, x.kh, x.vh, c0, c0, min(min(x.k1, c0 + kKeys), limit));
        cp_async_commit();
    };
    int it = blockIdx.x;
    if (it < items) {
        const Item x = item(it);
        issue_chunk(x, 0, pos);
        issue_chunk(x, 1, pos);
    }
    stamp(a.stamps, kStPrologue, 1);
    stamp(a.stamps, kStWait, 0);
    pdl_wait();
    if (a.late_trigger) pdl_launch_dependents();
    stamp(a.stamps, kStWait, 1);
    stamp(a.stamps, kStKeys, 0);
    for (bool first = true; it < items; it += gridDim.x, first = false) {
        const Item x = item(it);
        if (!first) {
            issue_chunk(x, 0, len);
            issue_chunk(x, 1, len);
        } else if (pos - x.k0 < 2 * kKeys && pos < x.k1) {  // the new key, written just now, in chunk 0 or 1
            const int c = (pos - x.k0) / kKeys, c0 = x.k0 + c * kKeys;
            issue_keys<HS>(kbuf + (c % 2) * kBuf, vbuf + (c % 2) * kBuf, x.kh, x.vh, c0, pos, pos + 1);
        }
        cp_async_commit();
        float q[kVec];
        load_query<HS>(q, a.q + (size_t)x.b * C, x.h, lane);
        SoftmaxState st;
        for (int c = 0, c0 = x.k0; c0 < x.k1; c++, c0 += kKeys) {
            const int c1 = min(x.k1, c0 + kKeys);
            if (c == 0) cp_async_wait<0>();  // chunks 0 and 1 and the key at pos
            else cp_async_wait<1>();         // chunk c (c + 1 may still be in flight)
            __syncthreads();
            const floatX* ks = kbuf + (c % 2) * kBuf;
            const floatX* vs = vbuf + (c % 2) * kBuf;
            const int j = c0 + warp * kBatch;
            if (j < c1) {
                KeyBlock kb;
#pragma unroll
                for (int i = 0; i < kLoads; i++) {  // clamped keys are masked by consume_keys
                    const int key = min(j + lane_key<HS>(i, lane), c1 - 1) - c0;
                    kb.k[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(ks, key, lane));
                    kb.v[i] = *reinterpret_cast<const VecX*>(lane_row<HS>(vs, key, lane));
                }
                consume_keys<HS>(st, q, kb, j, c1, lane);
            }
            __syncthreads();        // the buffer is consumed before chunk c + 2 overwrites it
            issue_chunk(x, c + 2, len);
        }
        if (first) stamp(a.stamps, kStKeys, 1), stamp(a.stamps, kStMerge, 0);
        warp_finish<HS>(st);
        save_warp<HS>(st, sm_m, sm_l, sm_acc, warp, lane);
        __syncthreads();
        if (warp == 0) {
            float m, l, acc[kVec];
            merge_warps<HS, kAW>(sm_m, sm_l, sm_acc, lane, m, l, acc);
            float* dst = a.part + (((size_t)x.b * a.NH + x.h) * a.as.max_splits + x.j) * (HS + 2);
            if (lane == 0) dst[0] = m, dst[1] = l;
            if (lane < Lanes<HS>::kLpk)
#pragma unroll
                for (int e = 0; e < kVec; e++) dst[2 + lane * kVec + e] = acc[e];
        }
        __syncthreads();  // sm_* are reused by the next item
    }
    stamp(a.stamps, kStMerge, 1);
}

// Blocks of the kernel that fit on the GPU at once (its shared memory limit raised first, once).
template <int HS>
int resident() {
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(link_attention_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)Chunk<HS>::kBytes));
        configured = true;
    }
    return resident_blocks((const void*)link_attention_kernel<HS>, kAW * 32, Chunk<HS>::kBytes);
}

template <int HS>
void launch(const AttnLinkArgs& a, bool pdl, cudaStream_t s) {
    auto kernel = link_attention_kernel<HS>;
    constexpr size_t smem = Chunk<HS>::kBytes;
    // one block per item of the longest context, at most what fits on the GPU at once (the kernel loops)
    const int grid = std::min(a.B * a.NH * a.as.max_splits, resident<HS>());
    launch_pdl(pdl, kernel, dim3(grid), dim3(kAW * 32), smem, s, a);
}

}  // namespace

AttnSplits link_attention_splits(int B, int NH, int maxT) {
    AttnSplits s;
    // as many splits per (row, head) as the GPU holds blocks per (row, head), at least 64 keys each
    s.min_span = 64;
    s.per_head = std::max(1, resident<64>() / (B * NH));
    s.max_splits = std::min(s.per_head, ceil_div(maxT, s.min_span));  // attn_splits never uses more
    return s;
}

size_t link_attention_scratch(int B, int NH, int HS, int maxT) {
    return (size_t)B * NH * link_attention_splits(B, NH, maxT).max_splits * (HS + 2);
}

void link_attention(const AttnLinkArgs& a, bool pdl, cudaStream_t s) {
    if (a.HS != 64) GD_FAIL(EXIT_CUDA, "internal: the attention link supports head size 64, not %d", a.HS);
    launch<64>(a, pdl, s);
}

}  // namespace gd
