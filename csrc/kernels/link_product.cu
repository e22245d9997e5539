// Decode v2 product links (links.cuh): out[M,N] = f(in[M,K]) @ w[N,K]^T for M <= 16 on tensor cores.
// A block owns a unit = 16 output features x one K slice (K / splits). Before its PDL wait it copies the unit's
// weight tile into shared memory with cp.async, in mma fragment order: for each 32-wide K step, the 16 B that
// lane (g, t) feeds to mma.m16n8k16 for rows g (lo) and g + 8 (hi) lie at lane * 16 of two 512-byte rows, so
// every fragment read is a conflict-free 16-byte load. (K is permuted inside each 32-wide step as in
// linear_mma.cu: lane t takes elements 8t..8t+7, the same for weights and input, so the sum is unchanged.)
// After the wait: the input rows (LinkStage) into shared memory as 16-bit values, the 8 warps split the K
// steps, their sums meet in shared memory, the epilogue (LinkEpi) writes the result. The logits link loops over
// vocabulary tiles on a resident grid with a ring of kRing weight tiles in flight.
#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "../common/check.h"
#include "attention_warp.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "launch.cuh"
#include "links.cuh"
#include "argmax.cuh"

namespace gd {

#if !defined(PRECISION_FP32)

namespace {

constexpr int kW = 8, kT = kW * 32, kTileN = 16, kRing = 3, kHS = 64;

// floatX elements between the parameter vectors in shared memory (each 16-byte aligned)
__host__ __device__ inline int param_stride(int K) { return (int)((K * sizeof(floatX) + 15) / 16 * 16 / sizeof(floatX)); }

// In-kernel stages (stamps.cuh), in order: prologue (weights and parameters issued), wait (PDL), input staging,
// the first unit's product and reduction, the epilogue (and the rest of the loop), the fused argmax.
enum Stage { kStPrologue, kStWait, kStInput, kStMma, kStEpilogue, kStArgmax };

// Shared memory of a block, the same arithmetic on host and device: the ring of weight tiles, the 16-bit input
// rows, the warps' sums, and for ResidLN the parameter vectors and the rows' statistics.
struct Smem {
    size_t w, xs, red, params, stat, total;
    int ldx;
};
constexpr size_t kStaticSmem = 64;  // room for the kernel's static shared memory (argmax_finish)

__host__ __device__ inline Smem smem_layout(int ring, int MB, int M, int Ks, int Kfull, bool resid_ln) {
    Smem s;
    size_t o = 0;
    s.w = o;
    o += (size_t)ring * kTileN * Ks * sizeof(floatX);
    s.ldx = Ks + 32;  // 64 bytes of padding: the rows g of a quarter-warp's B-fragment reads fall in other banks
    s.xs = o;
    o += ((size_t)M * s.ldx * sizeof(floatX) + 15) / 16 * 16;
    s.red = o;
    o += (size_t)kW * kTileN * MB * sizeof(float);
    s.params = o;  // ResidLN: ln_w, ln_b, part_bias [Kfull] each
    o += resid_ln ? 3 * (size_t)param_stride(Kfull) * sizeof(floatX) : 0;
    s.stat = o;  // ResidLN: per warp (sum, sumsq) of up to 2 rows, then per row (mean, rstd)
    o += resid_ln ? (kW * 2 * 2 + 16 * 2) * sizeof(float) : 0;
    s.total = o;
    return s;
}

// Issues the copies of a unit's weight tile (rows n0..n0+15, columns k0..k0+Ks) in fragment order.
__device__ __forceinline__ void issue_tile(uint8_t* dst, const floatX* w, int n0, int k0, int K, int Ks) {
    const int cpr = Ks / 8;  // 16-byte chunks per row
    for (int q = threadIdx.x; q < kTileN * cpr; q += kT) {
        const int r = q / cpr, c = q % cpr;
        const int s = c / 4, t = c % 4, hi = r / 8, g = r % 8;
        cp_async16(dst + ((size_t)(s * 2 + hi) * 32 + g * 4 + t) * 16, w + (size_t)(n0 + r) * K + k0 + c * 8);
    }
}

// Copies n floatX (n a multiple of kVec) to shared memory.
__device__ __forceinline__ void issue_vec(floatX* dst, const floatX* src, int n) {
    for (int k = threadIdx.x * kVec; k < n; k += kT * kVec) cp_async16(dst + k, src + k);
}

// One round of a lane's chunks of row m for ResidLN: the 4-float chunks c = c0 + u * step (u < U, c < K), every
// source of every chunk (the residual or the embedding, then P partial sums when npart > 0) loaded before the
// first add, so a round is one memory round trip. Adds to the lane's sum and sum of squares.
template <int U, int P>
__device__ __forceinline__ void resid_round(const LinkArgs& a, const Smem& L, floatX* xs, const floatX* pb, int m,
                                            int c0, int step, int tok, int pos, float& s, float& sq) {
    const int K = a.K, q4 = K / 4;
    float4 v[U], pp[U][P > 0 ? P : 1];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int c = c0 + u * step;
        if (c >= K) continue;
        if (a.res) {
            v[u] = __ldcg(reinterpret_cast<const float4*>(a.res + (size_t)m * K + c));
        } else {  // the embedding: wte[token] + wpe[pos]
            const uint2 e = *reinterpret_cast<const uint2*>(a.wte + (size_t)tok * K + c);
            const uint2 p = *reinterpret_cast<const uint2*>(a.wpe + (size_t)pos * K + c);
            const floatX* ev = reinterpret_cast<const floatX*>(&e);
            const floatX* pv = reinterpret_cast<const floatX*>(&p);
            v[u] = make_float4(to_f(ev[0]) + to_f(pv[0]), to_f(ev[1]) + to_f(pv[1]), to_f(ev[2]) + to_f(pv[2]),
                               to_f(ev[3]) + to_f(pv[3]));
        }
#pragma unroll
        for (int p = 0; p < P; p++)
            if (p < a.npart) pp[u][p] = __ldcg(reinterpret_cast<const float4*>(a.part + ((size_t)p * a.M + m) * K + c));
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int c = c0 + u * step;
        if (c >= K) continue;
        float4 x = v[u];
        if (P > 0) {  // the partial sums in order, then their bias
            float4 b = pp[u][0];
#pragma unroll
            for (int p = 1; p < P; p++)
                if (p < a.npart) b.x += pp[u][p].x, b.y += pp[u][p].y, b.z += pp[u][p].z, b.w += pp[u][p].w;
            x.x += b.x + to_f(pb[c]), x.y += b.y + to_f(pb[c + 1]);
            x.z += b.z + to_f(pb[c + 2]), x.w += b.w + to_f(pb[c + 3]);
        }
        if (a.res_out && (m * q4 + c / 4) % gridDim.x == blockIdx.x)
            *reinterpret_cast<float4*>(a.res_out + (size_t)m * K + c) = x;
        s += x.x + x.y + x.z + x.w;
        sq += x.x * x.x + x.y * x.y + x.z * x.z + x.w * x.w;
        floatX h[4] = {from_f<floatX>(x.x), from_f<floatX>(x.y), from_f<floatX>(x.z), from_f<floatX>(x.w)};
        *reinterpret_cast<uint2*>(xs + (size_t)m * L.ldx + c) = *reinterpret_cast<const uint2*>(h);
    }
}

// ResidLN: the M rows of x = res (or the embedding) + part[0..npart) + part_bias are summed in fp32 and go to
// xs as 16-bit values, and chunk i of the M x K values also to res_out, by block i % gridDim.x (each written
// once). With M <= 8 a row is shared by 8 / M warps, with M = 16 a warp takes rows w and w + 8; a lane's chunks
// of a row take one round trip (up to 6 chunks in flight without partial sums, 2 with them). The rows'
// LayerNorm statistics come from the fp32 sums, added in a fixed order (warp shuffles, then the row's warps in
// turn: deterministic); then xs is normalised in place.
__device__ void stage_resid_ln(const LinkArgs& a, const Smem& L, uint8_t* smem, int pos) {
    const floatX* lnw = reinterpret_cast<const floatX*>(smem + L.params);
    const floatX* lnb = lnw + param_stride(a.K);
    const floatX* pb = lnb + param_stride(a.K);
    float* wstat = reinterpret_cast<float*>(smem + L.stat);  // [kW][2 rows][sum, sumsq]
    float* rstat = wstat + kW * 4;                           // [16][mean, rstd]
    floatX* xs = reinterpret_cast<floatX*>(smem + L.xs);
    const int K = a.K, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wpr = a.M >= kW ? 1 : kW / a.M;  // warps per row
    for (int rr = 0; rr < 2; rr++) {
        const int m = a.M >= kW ? warp + rr * kW : (rr == 0 ? warp / wpr : a.M);
        float s = 0.f, sq = 0.f;
        if (m < a.M) {
            const int step = wpr * 128, first = ((a.M >= kW ? 0 : warp % wpr) * 32 + lane) * 4;
            const int tok = a.res ? 0 : __ldcg(a.tokens + (size_t)m * a.maxT + pos);
            if (a.npart == 0)
                for (int c0 = first; c0 < K; c0 += 6 * step) resid_round<6, 0>(a, L, xs, pb, m, c0, step, tok, pos, s, sq);
            else
                for (int c0 = first; c0 < K; c0 += 2 * step)
                    resid_round<2, kLinkMaxParts>(a, L, xs, pb, m, c0, step, tok, pos, s, sq);
        }
        s = warp_sum(s);
        sq = warp_sum(sq);
        if (lane == 0) wstat[warp * 4 + rr * 2] = s, wstat[warp * 4 + rr * 2 + 1] = sq;
    }
    __syncthreads();
    if (threadIdx.x < a.M) {
        const int m = threadIdx.x;
        float s = 0.f, sq = 0.f;
        if (a.M >= kW) {
            s = wstat[(m % kW) * 4 + (m / kW) * 2], sq = wstat[(m % kW) * 4 + (m / kW) * 2 + 1];
        } else {
            for (int q = 0; q < wpr; q++) s += wstat[(m * wpr + q) * 4], sq += wstat[(m * wpr + q) * 4 + 1];
        }
        ln_stats(s, sq, K, rstat[2 * m], rstat[2 * m + 1]);
    }
    __syncthreads();
    const int vpr = K / kVec;  // 16-byte vectors per row
    for (int i = threadIdx.x; i < a.M * vpr; i += kT) {
        const int m = i / vpr, k = (i % vpr) * kVec;
        const float mean = rstat[2 * m], rstd = rstat[2 * m + 1];
        VecX v = *reinterpret_cast<const VecX*>(xs + (size_t)m * L.ldx + k);
        const VecX gw = *reinterpret_cast<const VecX*>(lnw + k), gb = *reinterpret_cast<const VecX*>(lnb + k);
#pragma unroll
        for (int j = 0; j < kVec; j++)
            v.v[j] = from_f<floatX>((to_f(v.v[j]) - mean) * rstd * to_f(gw.v[j]) + to_f(gb.v[j]));
        *reinterpret_cast<VecX*>(xs + (size_t)m * L.ldx + k) = v;
    }
}

// AttnMerge: the block's K slice is heads h0 .. h0 + Ks / 64 - 1; warp w merges the splits of (row, head) pairs
// w, w + 8, ... and writes y = acc / l into xs.
__device__ void stage_attn_merge(const LinkArgs& a, const Smem& L, uint8_t* smem, int pos, int k0, int Ks) {
    floatX* xs = reinterpret_cast<floatX*>(smem + L.xs);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, hps = Ks / kHS, h0 = k0 / kHS;
    int span;
    const int used = attn_splits(a.as, pos + 1, &span);
    const int pairs = a.M * hps;
    if (used == 1) {  // one split per (row, head), nothing to merge: kP pairs per warp in flight
        constexpr int kP = 4;
        for (int pr0 = warp * kP; pr0 < pairs; pr0 += kW * kP) {
            float l[kP], acc[kP][kVec];
#pragma unroll
            for (int u = 0; u < kP; u++) {
                const int pr = pr0 + u;
                if (pr >= pairs || lane >= Lanes<kHS>::kLpk) continue;
                const float* base = a.attn_part + ((size_t)(pr / hps) * a.NH + h0 + pr % hps) * a.as.max_splits * (kHS + 2);
                l[u] = __ldcg(base + 1);
#pragma unroll
                for (int e = 0; e < kVec; e++) acc[u][e] = __ldcg(base + 2 + lane * kVec + e);
            }
#pragma unroll
            for (int u = 0; u < kP; u++)
                if (pr0 + u < pairs)
                    store_out<kHS>(xs + (size_t)((pr0 + u) / hps) * L.ldx + ((pr0 + u) % hps) * kHS, acc[u], l[u], lane);
        }
        return;
    }
    for (int pr = warp; pr < pairs; pr += kW) {
        const int m = pr / hps, hh = pr % hps;
        const float* base = a.attn_part + (((size_t)m * a.NH + h0 + hh) * a.as.max_splits) * (kHS + 2);
        float l, acc[kVec];
        merge_splits<kHS>(base, used, lane, l, acc);
        store_out<kHS>(xs + (size_t)m * L.ldx + hh * kHS, acc, l, lane);
    }
}

// Plain: the block's K slice of x[M][K] into xs (one cp.async group).
__device__ void stage_plain(const LinkArgs& a, const Smem& L, uint8_t* smem, int k0, int Ks) {
    floatX* xs = reinterpret_cast<floatX*>(smem + L.xs);
    const int cpr = Ks / kVec;
    for (int q = threadIdx.x; q < a.M * cpr; q += kT) {
        const int m = q / cpr, c = (q % cpr) * kVec;
        cp_async16(xs + (size_t)m * L.ldx + c, a.x + (size_t)m * a.K + k0 + c);
    }
    cp_async_commit();
}

// Waits until at most n (<= kRing) cp.async groups are in flight.
__device__ __forceinline__ void cp_async_wait_n(int n) {
    if (n >= 3) cp_async_wait<3>();
    else if (n >= 2) cp_async_wait<2>();
    else if (n == 1) cp_async_wait<1>();
    else cp_async_wait<0>();
}

// ring: weight tiles in flight per block (1 unless the block loops over units: the logits link).
template <int NT, LinkStage ST, LinkEpi EP>
__global__ void __launch_bounds__(kT, 2) link_product_kernel(LinkArgs a, int ring) {
    constexpr bool kLoop = EP == LinkEpi::Logits;
    constexpr int MB = 8 * NT;
    const int R = kLoop ? ring : 1;
    extern __shared__ __align__(16) uint8_t smem[];
    const int Ks = a.K / a.splits, ksteps = Ks / 32, ntiles = a.N / kTileN, units = ntiles * a.splits;
    const Smem L = smem_layout(R, MB, a.M, Ks, a.K, ST == LinkStage::ResidLN);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    stamp(a.stamps, kStPrologue, 0);
    if (!a.late_trigger) pdl_launch_dependents();  // the next link's blocks may start (and copy their weights)

    // Before the wait: the weights of the block's first R units, the constant parameters (with the first).
    const size_t wtile = (size_t)kTileN * Ks * sizeof(floatX);
    int unit = blockIdx.x;
    if (ST == LinkStage::ResidLN) {  // a group of its own, first: the staging needs it, not the weights
        floatX* p = reinterpret_cast<floatX*>(smem + L.params);
        issue_vec(p, a.ln_w, a.K);
        issue_vec(p + param_stride(a.K), a.ln_b, a.K);
        if (a.npart > 0) issue_vec(p + 2 * param_stride(a.K), a.part_bias, a.K);
        cp_async_commit();
    }
    for (int r = 0; r < R; r++) {
        const int u = unit + r * (int)gridDim.x;
        if (u < units) issue_tile(smem + L.w + r * wtile, a.w, (u / a.splits) * kTileN, (u % a.splits) * Ks, a.K, Ks);
        cp_async_commit();
    }
    // Epilogue ownership: thread i < 16 * MB owns (feature i / MB, row i % MB) of each unit.
    const int out_f = threadIdx.x / MB, out_m = threadIdx.x % MB;
    const bool owns = threadIdx.x < kTileN * MB && out_m < a.M;
    auto bias_of = [&](int u) {
        return owns && a.bias && (EP == LinkEpi::QKV || EP == LinkEpi::Gelu || EP == LinkEpi::Resid)
                   ? to_f(a.bias[(u / a.splits) * kTileN + out_f])
                   : 0.f;
    };
    float bias_v = unit < units ? bias_of(unit) : 0.f;
    stamp(a.stamps, kStPrologue, 1);
    stamp(a.stamps, kStWait, 0);
    pdl_wait();
    if (a.late_trigger) pdl_launch_dependents();
    stamp(a.stamps, kStWait, 1);
    stamp(a.stamps, kStInput, 0);
    const int pos = *a.d_pos;
    const int k0 = (unit % a.splits) * Ks;
    float resid = 0.f;  // Resid: this thread's residual value, loaded with the input
    if (EP == LinkEpi::Resid && owns && unit < units)
        resid = __ldcg(a.fout + (size_t)out_m * a.N + (unit / a.splits) * kTileN + out_f);
    if (ST == LinkStage::Plain) {
        if (unit < units) stage_plain(a, L, smem, k0, Ks);
        cp_async_wait<0>();
        __syncthreads();
    } else if (ST == LinkStage::AttnMerge) {
        if (unit < units) stage_attn_merge(a, L, smem, pos, k0, Ks);
        cp_async_wait<0>();
        __syncthreads();
    } else {
        cp_async_wait_n(R);  // the parameters (the weight tiles may still be on their way)
        __syncthreads();
        stage_resid_ln(a, L, smem, pos);
        cp_async_wait_n(R - 1);  // the first tile
        __syncthreads();
    }
    stamp(a.stamps, kStInput, 1);
    if (unit >= units) return;  // (after staging: res_out chunks are spread over every block)

    const floatX* xs = reinterpret_cast<const floatX*>(smem + L.xs);
    float* red = reinterpret_cast<float*>(smem + L.red);
    unsigned long long best = 0ull;  // Logits + argmax: this thread's best (logit, id) key
    const int spw = (ksteps + kW - 1) / kW;
    stamp(a.stamps, kStMma, 0);
    for (int it = 0;; it++) {
        const int slot = it % R;
        if (kLoop) {
            cp_async_wait_n(R - 1);  // this unit's tile (one group is committed per unit)
            __syncthreads();
        }
        const uint8_t* wt = smem + L.w + slot * wtile;
        float c[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
#pragma unroll 2
        for (int s = warp * spw; s < min(ksteps, (warp + 1) * spw); s++) {
            const int4 lo = *reinterpret_cast<const int4*>(wt + ((size_t)(s * 2) * 32 + lane) * 16);
            const int4 hi = *reinterpret_cast<const int4*>(wt + ((size_t)(s * 2 + 1) * 32 + lane) * 16);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int row = nt * 8 + g;
                int4 b = make_int4(0, 0, 0, 0);
                if (row < a.M) b = *reinterpret_cast<const int4*>(xs + (size_t)row * L.ldx + s * 32 + 8 * t);
                mma16816(c[nt], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
                mma16816(c[nt], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
            }
        }
        // c[nt]: (feature g, row nt*8+2t), (g, +1), (feature g+8, row nt*8+2t), (g+8, +1)
        float* r = red + (size_t)warp * kTileN * MB;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            r[g * MB + nt * 8 + 2 * t] = c[nt][0];
            r[g * MB + nt * 8 + 2 * t + 1] = c[nt][1];
            r[(g + 8) * MB + nt * 8 + 2 * t] = c[nt][2];
            r[(g + 8) * MB + nt * 8 + 2 * t + 1] = c[nt][3];
        }
        __syncthreads();  // sums in `red`; every warp is done with this slot's tile
        const int next = unit + R * (int)gridDim.x;
        if (kLoop) {  // refill the slot just consumed
            if (next < units) issue_tile(smem + L.w + slot * wtile, a.w, next * kTileN, 0, a.K, Ks);
            cp_async_commit();
        }
        if (it == 0) stamp(a.stamps, kStMma, 1), stamp(a.stamps, kStEpilogue, 0);
        if (owns) {
            const int n = (unit / a.splits) * kTileN + out_f;
            float v = bias_v;
#pragma unroll
            for (int wi = 0; wi < kW; wi++) v += red[(size_t)wi * kTileN * MB + threadIdx.x];
            if (EP == LinkEpi::QKV) {
                if (n < a.C) {
                    a.out[(size_t)out_m * a.C + n] = from_f<floatX>(v);
                } else {  // K and V columns go straight into the cache
                    const int cc = n % a.C;
                    (n < 2 * a.C ? a.kcache : a.vcache)[cache_offset(out_m, cc / kHS, pos, cc % kHS, a.NH, a.maxT, kHS)] =
                        from_f<floatX>(v);
                }
            } else if (EP == LinkEpi::Partial) {
                a.fout[((size_t)(unit % a.splits) * a.M + out_m) * a.N + n] = v;
            } else if (EP == LinkEpi::Gelu) {
                a.out[(size_t)out_m * a.N + n] = from_f<floatX>(gelu_tanh(v));
            } else if (EP == LinkEpi::Resid) {
                a.fout[(size_t)out_m * a.N + n] = resid + v;
            } else {
                a.fout[(size_t)out_m * a.N + n] = v;
                if (a.argmax && n < a.V) {
                    const unsigned long long k = argmax_key(v, n);
                    best = k > best ? k : best;
                }
            }
        }
        if (!kLoop) break;
        unit += gridDim.x;
        if (unit >= units) break;
    }
    stamp(a.stamps, kStEpilogue, 1);
    if (kLoop && a.argmax) {
        stamp(a.stamps, kStArgmax, 0);
        __syncthreads();  // every thread has read its sums from `red`
        argmax_finish<MB, kW>(a.argmax, a.ticket, a.tok_out, a.d_pos, a.maxT, best, a.M,
                              reinterpret_cast<unsigned long long*>(red));
        stamp(a.stamps, kStArgmax, 1);
    }
}

// Weight tiles in flight per block of a looping link: kRing if that fits shared memory, else fewer.
int ring_for(LinkStage st, LinkEpi ep, const LinkArgs& a) {
    if (ep != LinkEpi::Logits) return 1;
    const size_t limit = (size_t)device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) - kStaticSmem;
    int r = kRing;
    while (r > 1 && smem_layout(r, a.M <= 8 ? 8 : 16, a.M, a.K / a.splits, a.K, st == LinkStage::ResidLN).total > limit) r--;
    return r;
}

template <int NT, LinkStage ST, LinkEpi EP>
void launch(const LinkArgs& a, bool pdl, cudaStream_t s) {
    auto kernel = link_product_kernel<NT, ST, EP>;
    constexpr bool kLoop = EP == LinkEpi::Logits;
    const int Ks = a.K / a.splits, ring = ring_for(ST, EP, a);
    const Smem L = smem_layout(ring, 8 * NT, a.M, Ks, a.K, ST == LinkStage::ResidLN);
    static bool configured = false;  // one attribute call per instantiation
    if (!configured) {  // all the opt-in shared memory the kernel's static shared memory leaves
        cudaFuncAttributes fa;
        CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) -
                                            (int)fa.sharedSizeBytes));
        configured = true;
    }
    const int units = a.N / kTileN * a.splits;
    const int grid = kLoop ? std::min(units, resident_blocks((const void*)kernel, kT, L.total)) : units;
    launch_pdl(pdl, kernel, dim3(grid), dim3(kT), L.total, s, a, ring);
}

template <int NT, LinkStage ST>
void dispatch_epi(LinkEpi ep, const LinkArgs& a, bool pdl, cudaStream_t s) {
    switch (ep) {
        case LinkEpi::QKV: launch<NT, ST, LinkEpi::QKV>(a, pdl, s); break;
        case LinkEpi::Partial: launch<NT, ST, LinkEpi::Partial>(a, pdl, s); break;
        case LinkEpi::Gelu: launch<NT, ST, LinkEpi::Gelu>(a, pdl, s); break;
        case LinkEpi::Resid: launch<NT, ST, LinkEpi::Resid>(a, pdl, s); break;
        case LinkEpi::Logits: launch<NT, ST, LinkEpi::Logits>(a, pdl, s); break;
    }
}

template <int NT>
void dispatch_stage(LinkStage st, LinkEpi ep, const LinkArgs& a, bool pdl, cudaStream_t s) {
    // The combinations the decode step uses (links.cuh); others are not instantiated.
    if (st == LinkStage::ResidLN && ep == LinkEpi::QKV) launch<NT, LinkStage::ResidLN, LinkEpi::QKV>(a, pdl, s);
    else if (st == LinkStage::ResidLN && ep == LinkEpi::Gelu) launch<NT, LinkStage::ResidLN, LinkEpi::Gelu>(a, pdl, s);
    else if (st == LinkStage::ResidLN && ep == LinkEpi::Logits) launch<NT, LinkStage::ResidLN, LinkEpi::Logits>(a, pdl, s);
    else if (st == LinkStage::AttnMerge && ep == LinkEpi::Partial) launch<NT, LinkStage::AttnMerge, LinkEpi::Partial>(a, pdl, s);
    else if (st == LinkStage::AttnMerge && ep == LinkEpi::Resid) launch<NT, LinkStage::AttnMerge, LinkEpi::Resid>(a, pdl, s);
    else if (st == LinkStage::Plain && ep == LinkEpi::Partial) launch<NT, LinkStage::Plain, LinkEpi::Partial>(a, pdl, s);
    else if (st == LinkStage::Plain && ep == LinkEpi::Resid) launch<NT, LinkStage::Plain, LinkEpi::Resid>(a, pdl, s);
    else GD_FAIL(EXIT_CUDA, "internal: link_product stage %d with epilogue %d is not built", (int)st, (int)ep);
}

}  // namespace

bool link_product_supported(LinkStage st, const LinkArgs& a) {
    if (!has_mma16816() || a.M < 1 || a.M > 16 || a.splits < 1 || a.N % kTileN || a.K % a.splits) return false;
    const int Ks = a.K / a.splits;
    if (Ks % 32 || (st == LinkStage::AttnMerge && Ks % kHS) || a.npart > kLinkMaxParts) return false;
    const Smem L = smem_layout(1, a.M <= 8 ? 8 : 16, a.M, Ks, a.K, st == LinkStage::ResidLN);
    return L.total + kStaticSmem <= (size_t)device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
}

void link_product(LinkStage st, LinkEpi ep, const LinkArgs& a, bool pdl, cudaStream_t s) {
    if (!link_product_supported(st, a) || (ep == LinkEpi::Logits && a.splits != 1) ||
        (ep == LinkEpi::Resid && a.splits != 1))
        GD_FAIL(EXIT_CUDA, "internal: link_product with unsupported M=%d N=%d K=%d splits=%d", a.M, a.N, a.K, a.splits);
    if (a.M <= 8)
        dispatch_stage<1>(st, ep, a, pdl, s);
    else
        dispatch_stage<2>(st, ep, a, pdl, s);
}

// res[m][n] += part[0][m][n] + ... + part[splits-1][m][n] + bias[n], in that order: the split-K partial sums of
// a projection whose consumer stages too many rows to add them itself.
__global__ void __launch_bounds__(kT) link_reduce_kernel(float* res, const float* part, const floatX* bias, int splits,
                                                         int M, int N) {
    pdl_launch_dependents();
    pdl_wait();
    const int q4 = N / 4;
    for (int i = blockIdx.x * kT + threadIdx.x; i < M * q4; i += gridDim.x * kT) {
        const int m = i / q4, c = (i % q4) * 4;
        float4 r = __ldcg(reinterpret_cast<const float4*>(res + (size_t)m * N + c));
        float4 p = __ldcg(reinterpret_cast<const float4*>(part + (size_t)m * N + c));
        for (int sp = 1; sp < splits; sp++) {
            const float4 o = __ldcg(reinterpret_cast<const float4*>(part + ((size_t)sp * M + m) * N + c));
            p.x += o.x, p.y += o.y, p.z += o.z, p.w += o.w;
        }
        r.x += p.x + to_f(bias[c]), r.y += p.y + to_f(bias[c + 1]);
        r.z += p.z + to_f(bias[c + 2]), r.w += p.w + to_f(bias[c + 3]);
        *reinterpret_cast<float4*>(res + (size_t)m * N + c) = r;
    }
}

ProjPlan link_proj_plan(LinkStage st, int M, int N, int K, int head_size, bool prefer_direct) {
    const int sms = device_attribute(cudaDevAttrMultiProcessorCount), tiles = N / kTileN;
    const size_t kDirectBytes = (size_t)64 << 10, kComfortable = (size_t)100 << 10;
    // Splits that fit (the tile and the input rows in shared memory), with the consumer adding the partials
    // itself (direct) or not; of each kind the first that gives every SM a share in comfortable shared memory,
    // else the last that fits. Direct ones win.
    int pick[2] = {0, 0};
    bool done[2] = {false, false};
    for (int sp = 1; sp <= kLinkMaxParts; sp++) {
        if (K % sp || (K / sp) % 32 || (head_size > 0 && (K / sp) % head_size)) continue;
        LinkArgs a;
        a.M = M, a.N = N, a.K = K, a.splits = sp;
        if (!link_product_supported(st, a)) continue;
        const int direct = sp == 1 || (size_t)(1 + sp) * M * N * sizeof(float) <= kDirectBytes;
        if (done[direct]) continue;
        pick[direct] = sp;
        done[direct] = tiles * sp >= sms && smem_layout(1, M <= 8 ? 8 : 16, M, K / sp, K, false).total <= kComfortable;
    }
    // A direct plan that leaves SMs without a share loses to partials reduced by one more link that does not,
    // unless prefer_direct.
    ProjPlan p;
    p.direct = pick[1] != 0 && (done[1] || prefer_direct || !done[0]);
    p.splits = p.direct ? pick[1] : pick[0] ? pick[0] : -1;
    p.epi = p.splits == 1 ? LinkEpi::Resid : LinkEpi::Partial;
    return p;
}

void link_reduce(float* res, const float* part, const floatX* bias, int splits, int M, int N, bool pdl,
                 cudaStream_t s) {
    const int sms = device_attribute(cudaDevAttrMultiProcessorCount);
    const int grid = std::max(1, std::min(sms, ceil_div((long)M * N / 4, kT)));
    launch_pdl(pdl, link_reduce_kernel, dim3(grid), dim3(kT), 0, s, res, part, bias, splits, M, N);
}

#else  // FP32 builds: the v1 CUDA-core path only

bool link_product_supported(LinkStage, const LinkArgs&) { return false; }
void link_product(LinkStage, LinkEpi, const LinkArgs&, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "link_product is not available in FP32 builds");
}
ProjPlan link_proj_plan(LinkStage, int, int, int, int, bool) {
    ProjPlan p;
    p.splits = -1;
    return p;
}
void link_reduce(float*, const float*, const floatX*, int, int, int, bool, cudaStream_t) {
    GD_FAIL(EXIT_CUDA, "link_reduce is not available in FP32 builds");
}

#endif

}  // namespace gd
