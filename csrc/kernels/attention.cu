// Causal self-attention over the KV cache: the K/V store, the warp-per-query kernel (kvonly, naive), the
// tensor-core prefill kernel and the v1 split decode kernel. The warp-level pieces are in attention_warp.cuh.
#include <cfloat>
#include <algorithm>
#include <cstdint>

#include "../common/check.h"
#include "attention_warp.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "launch.cuh"

namespace gd {

// One block per token row: its K and V parts (columns [C, 3C) of the QKV row) into the cache at position
// *d_pos + t, 16 bytes per load and store (HS is a multiple of kVec, so a vector never crosses a head).
__global__ void kv_store_kernel(floatX* kc, floatX* vc, const floatX* qkv, const int* d_pos, int T, int NH, int HS,
                                int maxT) {
    int row = blockIdx.x;  // b*T + t
    int b = row / T, t = row % T, p = *d_pos + t, C = NH * HS;
    const floatX* src = qkv + (size_t)row * 3 * C;
    for (int c = threadIdx.x * kVec; c < C; c += blockDim.x * kVec) {
        size_t dst = cache_offset(b, c / HS, p, c % HS, NH, maxT, HS);
        *reinterpret_cast<VecX*>(kc + dst) = *reinterpret_cast<const VecX*>(src + C + c);
        *reinterpret_cast<VecX*>(vc + dst) = *reinterpret_cast<const VecX*>(src + 2 * C + c);
    }
}

void kv_store(floatX* kcache, floatX* vcache, const floatX* qkv, const int* d_pos, int B, int T, int NH, int HS,
              int maxT, cudaStream_t s) {
    require_head_size(HS);
    kv_store_kernel<<<B * T, 128, 0, s>>>(kcache, vcache, qkv, d_pos, T, NH, HS, maxT);
    CUDA_CHECK_LAUNCH();
}

template <int HS>
__global__ void attention_kernel(floatX* out, const floatX* qkv, const floatX* kc, const floatX* vc, const int* d_pos,
                                 int B, int T, int NH, int maxT) {
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= B * NH * T) return;
    int i = w % T, h = (w / T) % NH, b = w / (T * NH), C = NH * HS;
    int row = b * T + i;
    float q[kVec];
    load_query<HS>(q, qkv + (size_t)row * 3 * C, h, lane);
    size_t head = ((size_t)b * NH + h) * maxT * HS;
    SoftmaxState st;
    attend_range<HS>(st, q, kc + head, vc + head, 0, *d_pos + i + 1, lane);
    warp_finish<HS>(st);
    store_out<HS>(out + (size_t)row * C + h * HS, st.acc, st.l, lane);
}

#if !defined(PRECISION_FP32)
// Prefill and naive (T > 1) attention on tensor cores for head size 64 (sm_80+, 16-bit builds), flash-style:
// a block takes kPQ = 64 queries of one (row, head), each of its 4 warps 16 of them, and walks the cache keys
// 0 .. (its last query's position) in tiles of kPK = 64 with an online softmax; nothing of size T x T is
// stored. S = Q K^T and O += P V are mma.m16n8k16 products. K is staged in shared memory as stored
// ([key][dim]) and V transposed ([dim][key]), so both B operands are 32-bit loads; rows are padded by 16 bytes
// (the 8 rows g of a fragment load fall in different banks). P is rounded to 16 bits for P V, the normaliser
// sums the fp32 values.
constexpr int kPQ = 64, kPK = 64, kPHS = 64, kPWarps = kPQ / 16, kPLd = kPHS + 8;

__global__ void __launch_bounds__(kPWarps * 32)
    attention_prefill_kernel(floatX* out, const floatX* qkv, const floatX* kc, const floatX* vc, const int* d_pos,
                             int T, int NH, int maxT) {
    __shared__ __align__(16) floatX ks[kPK][kPLd];   // [key][dim]
    __shared__ __align__(16) floatX vts[kPHS][kPLd]; // [dim][key]
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kPQ;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int C = NH * kPHS, pos0 = *d_pos;
    const size_t head = ((size_t)b * NH + h) * maxT * kPHS;
    const floatX *kh = kc + head, *vh = vc + head;
    const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;  // this thread's two query rows of the chunk
    const int p0 = pos0 + r0, p1 = pos0 + r1;        // their positions: keys 0 .. p are visible
    const int last = pos0 + min(q0 + kPQ, T) - 1;    // the block's last visible key
    uint32_t qa[kPHS / 16][4];                       // A fragments of Q, 4 steps of 16 dims
    {
        const floatX* qr0 = qkv + ((size_t)b * T + min(r0, T - 1)) * 3 * C + h * kPHS + 2 * t;
        const floatX* qr1 = qkv + ((size_t)b * T + min(r1, T - 1)) * 3 * C + h * kPHS + 2 * t;
#pragma unroll
        for (int s = 0; s < kPHS / 16; s++) {
            qa[s][0] = *reinterpret_cast<const uint32_t*>(qr0 + s * 16);
            qa[s][1] = *reinterpret_cast<const uint32_t*>(qr1 + s * 16);
            qa[s][2] = *reinterpret_cast<const uint32_t*>(qr0 + s * 16 + 8);
            qa[s][3] = *reinterpret_cast<const uint32_t*>(qr1 + s * 16 + 8);
        }
    }
    const float scale = rsqrtf((float)kPHS);
    float o[kPHS / 8][4] = {};               // O: (row r0, dims n*8+2t, +1), (row r1, same dims)
    float m0 = -1e30f, m1 = -1e30f, l0 = 0.f, l1 = 0.f;
    for (int k0 = 0; k0 <= last; k0 += kPK) {
        __syncthreads();  // the previous tile is consumed
        for (int i = threadIdx.x; i < kPK * kPHS / kVec; i += kPWarps * 32) {
            const int key = i / (kPHS / kVec), d = (i % (kPHS / kVec)) * kVec;
            const size_t src = (size_t)min(k0 + key, last) * kPHS + d;  // keys past `last` are masked below
            *reinterpret_cast<VecX*>(&ks[key][d]) = *reinterpret_cast<const VecX*>(kh + src);
            const VecX v = *reinterpret_cast<const VecX*>(vh + src);
#pragma unroll
            for (int e = 0; e < kVec; e++) vts[d + e][key] = v.v[e];
        }
        __syncthreads();
        float s[kPK / 8][4];
#pragma unroll
        for (int n = 0; n < kPK / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int d = 0; d < kPHS / 16; d++) {
                const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&ks[n * 8 + g][d * 16 + 2 * t]);
                const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&ks[n * 8 + g][d * 16 + 2 * t + 8]);
                mma16816(s[n], qa[d][0], qa[d][1], qa[d][2], qa[d][3], b0, b1);
            }
        }
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int n = 0; n < kPK / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = k0 + n * 8 + 2 * t + e;
                s[n][e] = key <= p0 ? s[n][e] * scale : -INFINITY;
                s[n][2 + e] = key <= p1 ? s[n][2 + e] * scale : -INFINITY;
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
#pragma unroll
        for (int x = 1; x < 4; x <<= 1) {  // the 4 threads of a row
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, x));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, x));
        }
        const float c0 = __expf(m0 - mx0), c1 = __expf(m1 - mx1);
        m0 = mx0, m1 = mx1, l0 *= c0, l1 *= c1;
#pragma unroll
        for (int n = 0; n < kPHS / 8; n++) o[n][0] *= c0, o[n][1] *= c0, o[n][2] *= c1, o[n][3] *= c1;
#pragma unroll
        for (int n = 0; n < kPK / 8; n++) {
            s[n][0] = __expf(s[n][0] - m0), s[n][1] = __expf(s[n][1] - m0);
            s[n][2] = __expf(s[n][2] - m1), s[n][3] = __expf(s[n][3] - m1);
            l0 += s[n][0] + s[n][1];
            l1 += s[n][2] + s[n][3];
        }
        // P as A fragments: keys 16j .. 16j+15 are S tiles 2j (cols 2t, 2t+1) and 2j+1 (cols 2t+8, 2t+9)
#pragma unroll
        for (int j = 0; j < kPK / 16; j++) {
            const uint32_t a0 = pack_x2(s[2 * j][0], s[2 * j][1]), a1 = pack_x2(s[2 * j][2], s[2 * j][3]);
            const uint32_t a2 = pack_x2(s[2 * j + 1][0], s[2 * j + 1][1]);
            const uint32_t a3 = pack_x2(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
            for (int n = 0; n < kPHS / 8; n++) {
                const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&vts[n * 8 + g][j * 16 + 2 * t]);
                const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&vts[n * 8 + g][j * 16 + 2 * t + 8]);
                mma16816(o[n], a0, a1, a2, a3, b0, b1);
            }
        }
    }
#pragma unroll
    for (int x = 1; x < 4; x <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, x);
        l1 += __shfl_xor_sync(0xffffffffu, l1, x);
    }
#pragma unroll
    for (int n = 0; n < kPHS / 8; n++) {
        if (r0 < T)
            *reinterpret_cast<uint32_t*>(out + ((size_t)b * T + r0) * C + h * kPHS + n * 8 + 2 * t) =
                pack_x2(o[n][0] / l0, o[n][1] / l0);
        if (r1 < T)
            *reinterpret_cast<uint32_t*>(out + ((size_t)b * T + r1) * C + h * kPHS + n * 8 + 2 * t) =
                pack_x2(o[n][2] / l1, o[n][3] / l1);
    }
}
#endif

// Split decode: a work item (split, h, b) is one block of kSplitWarps warps over a contiguous span of keys, each
// warp a slice of it, walked kLoads * kKpl keys per memory round trip. The span adapts to the position and the
// grid (sized for the GPU, fixed for graph capture): each head gets as many splits as the grid has blocks per
// head, but no split has fewer than kMinSplitKeys keys. A head with one split (large B: the grid has a block
// per head and row) is merged in shared memory and written directly; otherwise each item writes its partial
// (max, normaliser, output) and the last item of the head to finish (atomic ticket, reset after use so graph
// replays start from zero) merges them. When there are more items than blocks the grid loops.
#ifndef GD_MIN_SPLIT_KEYS
#define GD_MIN_SPLIT_KEYS 128
#endif
constexpr int kMinSplitKeys = GD_MIN_SPLIT_KEYS, kSplitWarps = 8;

template <int HS>
__global__ void __launch_bounds__(kSplitWarps * 32)
    attention_split_kernel(floatX* out, float* part, int* tickets, const floatX* qkv, const floatX* kc,
                           const floatX* vc, const int* d_pos, int B, int NH, int maxT, int nsplit) {
    constexpr int kBatch = kLoads * Lanes<HS>::kKpl, kLpk = Lanes<HS>::kLpk;
    const int C = NH * HS, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // Before waiting for the QKV kernel: the position (set by the previous step) and the cached keys before
    // it (written by earlier steps) do not depend on it, so the first batch of the first item loads during its
    // tail, and the rest of the item's keys before pos are fetched into L2. Only the query and the key/value at
    // pos come from the kernel just before.
    const bool early = early_trigger_for(B);
    pdl_trigger_early(early);
    const int pos = *d_pos, len = pos + 1;
    const int per_head = max(1, (int)gridDim.x / (B * NH));
    const int want = min(per_head, (len + kMinSplitKeys - 1) / kMinSplitKeys);
    const int span = (len + want - 1) / want;                  // keys per split
    const int used = (len + span - 1) / span;                  // <= want <= nsplit
    const int wspan = (span + kSplitWarps - 1) / kSplitWarps;  // keys per warp
    const int items = used * NH * B;
    struct Item {
        int split, h, b, w0, w1;
        const floatX *kh, *vh;
    };
    auto item = [&](int it) {
        Item x;
        x.split = it % used;
        x.h = (it / used) % NH;
        x.b = it / (used * NH);
        const int j1 = min(len, (x.split + 1) * span);
        x.w0 = x.split * span + warp * wspan;
        x.w1 = min(j1, x.w0 + wspan);
        const size_t head = ((size_t)x.b * NH + x.h) * maxT * HS;
        x.kh = kc + head;
        x.vh = vc + head;
        return x;
    };
    KeyBlock kb;
    int it = blockIdx.x;
    int pre_end = 0;  // the first batch's keys [w0, pre_end) are in flight (all before pos)
    if (it < items) {
        Item x = item(it);
        pre_end = min(min(x.w1, x.w0 + kBatch), pos);
        if (x.w0 < pre_end) load_keys<HS>(kb, x.kh, x.vh, x.w0, pre_end, lane);
        prefetch_rows_l2<HS>(x.kh, x.vh, max(pre_end, x.w0), min(x.w1, pos), lane);
    }
    pdl_wait();
    pdl_trigger_late(early);
    __shared__ float sm_m[kSplitWarps], sm_l[kSplitWarps], sm_acc[kSplitWarps][HS];
    __shared__ int ticket;
    for (bool first = true; it < items; it += gridDim.x, first = false) {
        const Item x = item(it);
        float q[kVec];
        load_query<HS>(q, qkv + (size_t)x.b * 3 * C, x.h, lane);
        SoftmaxState st;
        for (int j = x.w0; j < x.w1; j += kBatch) {
            const int jb = min(x.w1, j + kBatch);
            if (first && j == x.w0 && x.w0 < pre_end) {
                if (pos < jb) reload_key<HS>(kb, x.kh, x.vh, j, pos, lane);  // the new key, in the prefetched batch
            } else {
                load_keys<HS>(kb, x.kh, x.vh, j, jb, lane);
            }
            consume_keys<HS>(st, q, kb, j, jb, lane);
        }
        warp_finish<HS>(st);
        save_warp<HS>(st, sm_m, sm_l, sm_acc, warp, lane);  // merge the warps through shared memory
        __syncthreads();
        const int bh = x.b * NH + x.h;
        float* base = part + (size_t)bh * nsplit * (HS + 2);
        if (warp == 0) {
            float m, l, acc[kVec];
            merge_warps<HS, kSplitWarps>(sm_m, sm_l, sm_acc, lane, m, l, acc);
            if (used == 1) {  // the head's only split: done
                store_out<HS>(out + (size_t)x.b * C + x.h * HS, acc, l, lane);
            } else {
                float* dst = base + x.split * (HS + 2);
                if (lane == 0) {
                    dst[0] = m;
                    dst[1] = l;
                }
                if (lane < kLpk)
#pragma unroll
                    for (int e = 0; e < kVec; e++) dst[2 + lane * kVec + e] = acc[e];
                __threadfence();
                __syncwarp();  // every lane's partial is visible before lane 0 takes the ticket
                if (lane == 0) ticket = atomicAdd(&tickets[bh], 1);
            }
        }
        __syncthreads();
        if (used > 1 && ticket == used - 1 && warp == 0) {
            // last item of this head: merge its splits
            if (lane == 0) tickets[bh] = 0;
            float l, acc[kVec];
            merge_splits<HS>(base, used, lane, l, acc);
            store_out<HS>(out + (size_t)x.b * C + x.h * HS, acc, l, lane);
        }
        __syncthreads();  // shared memory and `ticket` are reused by the next item
    }
}

// The end of a (row, head, split) work item in a block of W warps: the warps' softmax states merged through
// shared memory; with one split the output is written (o), else the split's partial (max, normaliser, output) goes
// to base[split] and the last split of the head to finish (atomic ticket, reset after use) merges them.
template <int HS, int W>
__device__ __forceinline__ void finish_item(SoftmaxState& st, float* sm_m, float* sm_l, float (*sm_acc)[HS],
                                            int* sm_ticket, floatX* o, float* base, int* ticket, int used, int split,
                                            int warp, int lane) {
    warp_finish<HS>(st);
    save_warp<HS>(st, sm_m, sm_l, sm_acc, warp, lane);
    __syncthreads();
    if (warp == 0) {
        float m, l, acc[kVec];
        merge_warps<HS, W>(sm_m, sm_l, sm_acc, lane, m, l, acc);
        if (used == 1) {
            store_out<HS>(o, acc, l, lane);
        } else {
            float* dst = base + split * (HS + 2);
            if (lane == 0) {
                dst[0] = m;
                dst[1] = l;
            }
            if (lane < Lanes<HS>::kLpk)
#pragma unroll
                for (int e = 0; e < kVec; e++) dst[2 + lane * kVec + e] = acc[e];
            __threadfence();
            __syncwarp();  // every lane's partial is visible before lane 0 takes the ticket
            if (lane == 0) *sm_ticket = atomicAdd(ticket, 1);
        }
    }
    __syncthreads();
    if (used > 1 && *sm_ticket == used - 1 && warp == 0) {  // the head's last split to finish merges them
        __threadfence();
        if (lane == 0) *ticket = 0;
        float l, acc[kVec];
        merge_splits<HS>(base, used, lane, l, acc);
        store_out<HS>(o, acc, l, lane);
    }
}

// Wide decode (B > kWideMinRows, where B x NH heads fill the GPU): a block of kWideWarps warps per work item (b, h,
// key split; `parts` splits per head only when there are too few heads to fill the GPU, else one). The block
// walks its keys in tiles of `kt`, two in flight: each tile's K and V rows are copied into shared memory with
// cp.async (one round trip for the first two tiles, issued before the PDL wait: the cached keys before the new
// token and the position do not depend on the QKV product), each warp takes a quarter of a tile, keeping its
// online softmax across tiles, and the warps merge through shared memory at the end. The new token's key and
// value come from its QKV row, and the block also stores them into the cache (this path has no separate K/V
// store). With several splits each block writes its partial (max, normaliser, output) and the last of the head
// to finish (atomic ticket, reset after use) merges them. The grid is heads x parts (a graph replays it at every
// position): a head uses as many of its parts as give each >= kWideMinKeys keys, and the blocks of the parts it
// does not use (split-major: they come last) exit at once; parts > 1 only below 4 blocks per SM, so such blocks
// are few (run 3 of perf-notes' "Large batches": a grid mostly of idle blocks costs ~1 us per resident round).
#ifndef GD_WIDE_SMEM_KB
#define GD_WIDE_SMEM_KB 24  // two stages of K and V tiles: 48 keys each at bf16, head size 64 (8 blocks per SM)
#endif
constexpr int kWideWarps = 4, kWideMinKeys = 64, kWideMinRows = 16, kWideSmemBytes = GD_WIDE_SMEM_KB * 1024;

template <int HS>
__global__ void __launch_bounds__(kWideWarps * 32)
    attention_wide_kernel(floatX* out, float* part, int* tickets, const floatX* qkv, floatX* kc, floatX* vc,
                          const int* d_pos, int B, int NH, int maxT, int nsplit, int kt, int parts) {
    extern __shared__ __align__(16) unsigned char wide_smem[];
    __shared__ float sm_m[kWideWarps], sm_l[kWideWarps], sm_acc[kWideWarps][HS];
    __shared__ int ticket;
    constexpr int kChunks = HS / kVec;  // 16-byte pieces of a cache row
    floatX* buf = reinterpret_cast<floatX*>(wide_smem);  // 2 stages x (K tile, V tile), kt rows each
    auto ktile = [&](int t) { return buf + (size_t)(t % 2) * 2 * kt * HS; };
    auto vtile = [&](int t) { return ktile(t) + (size_t)kt * HS; };
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, heads = B * NH, C = NH * HS;
    const int bh = blockIdx.x % heads, split = blockIdx.x / heads, h = bh % NH, b = bh / NH;
    const int pos = *d_pos, len = pos + 1;
    const int used = min(parts, ceil_div(len, kWideMinKeys));
    const bool active = split < used;
    const int span = ceil_div(len, used), j0 = split * span, j1 = min(len, j0 + span), n = j1 - j0;
    const int tiles = ceil_div(n, kt);
    const size_t head = ((size_t)b * NH + h) * maxT * HS;
    floatX *kh = kc + head, *vh = vc + head;
    const floatX* row = qkv + (size_t)b * 3 * C + h * HS;  // this head's query; its key at + C, value at + 2C
    // Tile t's rows into its stage; the new token's row from the QKV row only after the wait (after_wait).
    auto stage = [&](int t, bool after_wait) {
        const int r0 = t * kt, rows = min(kt, n - r0);
        floatX *kd = ktile(t), *vd = vtile(t);
        for (int i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
            const int r = i / kChunks, c = (i % kChunks) * kVec, key = j0 + r0 + r;
            if (key == pos) {
                if (after_wait) {
                    cp_async16(kd + r * HS + c, row + C + c);
                    cp_async16(vd + r * HS + c, row + 2 * C + c);
                }
                continue;
            }
            cp_async16(kd + r * HS + c, kh + (size_t)key * HS + c);
            cp_async16(vd + r * HS + c, vh + (size_t)key * HS + c);
        }
        cp_async_commit();
    };
    if (active)
        for (int t = 0; t < min(2, tiles); t++) stage(t, false);
    pdl_wait();
    if (!active) return;
    if (j1 == len && threadIdx.x < kChunks) {  // the new token into the cache, and into its tile if staged already
        const int c = threadIdx.x * kVec, r = pos - j0, t = r / kt;
        const VecX kv = *reinterpret_cast<const VecX*>(row + C + c), vv = *reinterpret_cast<const VecX*>(row + 2 * C + c);
        *reinterpret_cast<VecX*>(kh + (size_t)pos * HS + c) = kv;
        *reinterpret_cast<VecX*>(vh + (size_t)pos * HS + c) = vv;
        if (t < 2) {
            *reinterpret_cast<VecX*>(ktile(t) + (r % kt) * HS + c) = kv;
            *reinterpret_cast<VecX*>(vtile(t) + (r % kt) * HS + c) = vv;
        }
    }
    float q[kVec];
    load_query<HS>(q, row - h * HS, h, lane);
    SoftmaxState st;
    for (int t = 0; t < tiles; t++) {
        if (t + 1 < tiles) cp_async_wait<1>();
        else cp_async_wait<0>();
        __syncthreads();  // tile t (and the new token's row) visible to every warp
        const int rows = min(kt, n - t * kt), wspan = ceil_div(rows, kWideWarps);
        const int w0 = min(rows, warp * wspan), w1 = min(rows, w0 + wspan);
        attend_range<HS>(st, q, ktile(t), vtile(t), w0, w1, lane);
        if (t + 2 < tiles) {
            __syncthreads();  // every warp is done with the stage tile t + 2 reuses
            stage(t + 2, true);
        }
    }
    finish_item<HS, kWideWarps>(st, sm_m, sm_l, sm_acc, &ticket, out + (size_t)b * C + h * HS,
                                part + (size_t)bh * nsplit * (HS + 2), tickets + bh, used, split, warp, lane);
}

void attention_forward(floatX* out, const floatX* qkv, const floatX* kcache, const floatX* vcache, const int* d_pos,
                       int B, int T, int NH, int HS, int maxT, cudaStream_t s) {
#if !defined(PRECISION_FP32)
    if (T > 1 && HS == kPHS && has_mma16816()) {
        attention_prefill_kernel<<<dim3(ceil_div(T, kPQ), NH, B), kPWarps * 32, 0, s>>>(out, qkv, kcache, vcache, d_pos,
                                                                                      T, NH, maxT);
        CUDA_CHECK_LAUNCH();
        return;
    }
#endif
    const int warps = 4;
    int grid = ceil_div((long)B * NH * T, warps);
    GD_HS_DISPATCH(HS, (attention_kernel<HS><<<grid, warps * 32, 0, s>>>(out, qkv, kcache, vcache, d_pos, B, T, NH,
                                                                          maxT)));
    CUDA_CHECK_LAUNCH();
}

bool attention_decode_stores_kv(int B) { return B > kWideMinRows; }

size_t attention_split_scratch(int B, int NH, int HS, int maxT) {
    // partials, then one int ticket per head (zeroed by the caller once)
    return (size_t)B * NH * ceil_div(maxT, kMinSplitKeys) * (HS + 2) + (size_t)B * NH;
}

void attention_decode_split(floatX* out, const floatX* qkv, floatX* kcache, floatX* vcache, const int* d_pos,
                            float* scratch, int B, int NH, int HS, int maxT, bool pdl, cudaStream_t s) {
    const int nsplit = ceil_div(maxT, kMinSplitKeys);  // splits per head at most (partials per head)
    int* tickets = reinterpret_cast<int*>(scratch + (size_t)B * NH * nsplit * (HS + 2));
    if (attention_decode_stores_kv(B)) {  // the wide kernel: key splits only to fill the GPU (4 blocks per SM)
        const int heads = B * NH;
        const int parts = std::min(nsplit, ceil_div(4L * device_attribute(cudaDevAttrMultiProcessorCount), heads));
        const int kt = kWideSmemBytes / (4 * HS * (int)sizeof(floatX));  // two stages of K and V tiles
        const size_t smem = (size_t)4 * kt * HS * sizeof(floatX);
        GD_HS_DISPATCH(HS, (launch_pdl(pdl, attention_wide_kernel<HS>, dim3((unsigned)(heads * parts)),
                                       dim3(kWideWarps * 32), smem, s, out, scratch, tickets, qkv, kcache, vcache,
                                       d_pos, B, NH, maxT, nsplit, kt, parts)));
        return;
    }
    // As many blocks as can be resident at once (the items of the longest context, at most): the kernel loops.
    auto grid_for = [&](const void* kernel) {
        return std::min((long)nsplit * NH * B, (long)resident_blocks(kernel, kSplitWarps * 32, 0));
    };
    GD_HS_DISPATCH(HS, (launch_pdl(pdl, attention_split_kernel<HS>,
                                   dim3((unsigned)grid_for((const void*)attention_split_kernel<HS>)),
                                   dim3(kSplitWarps * 32), 0, s, out, scratch, tickets, qkv, kcache, vcache, d_pos, B,
                                   NH, maxT, nsplit)));
}

}  // namespace gd
