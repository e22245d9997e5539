// Decode v2 ("short links", 16-bit builds, sm_80+, head size 64, B <= 16): a decode step as a chain of short
// dependent kernels. Each product kernel copies its whole weight tile (and its constant parameters) into shared
// memory with cp.async before it waits for the kernel before it (PDL), lets the next kernel start at once, and
// after the wait does only what the dependency forces: one round trip for its input rows, then tensor-core
// products out of shared memory and a short epilogue. Products whose N is small are split over K so that every
// SM has a share; their partial sums are added, in a fixed order, by the kernel that consumes them (no atomics:
// results are deterministic), together with the residual and the bias, and that consumer computes the
// LayerNorm statistics itself. The residual stream is fp32. The attention writes one partial (max, normaliser,
// output) per key split, merged by the attention projection as it stages its input. Per layer:
//   qkv      residual + partials (or the embedding, layer 0) -> LayerNorm -> Q (to q), K/V (to the cache)
//   attn     keys of each split in shared memory before the wait -> partials per split
//   attproj  merge of the partials -> product -> split-K partials (or the residual, += in place)
//   fc       residual + partials -> LayerNorm -> product -> GELU -> h
//   fcproj   h -> product -> split-K partials (or the residual)
// then logits: residual + partials -> LayerNorm -> looped product over the vocabulary (+ fused greedy argmax).
#pragma once
#include <cuda_runtime.h>

#include "../common/precision.h"
#include "stamps.cuh"

namespace gd {

// How the decode attention splits the keys 0..len-1 of a (row, head): at most per_head splits of at least
// min_span keys. Shared by the attention kernel (which writes the partials) and its consumer (which merges them).
struct AttnSplits {
    int per_head = 1;
    int min_span = 64;
    int max_splits = 1;  // partial slots per (row, head): the splits at max_seq_len
};
__host__ __device__ inline int attn_splits(const AttnSplits& s, int len, int* span) {
    int want = (len + s.min_span - 1) / s.min_span;
    want = want < s.per_head ? want : s.per_head;
    const int sp = (len + want - 1) / want;
    *span = sp;
    return (len + sp - 1) / sp;
}

// Where a product's input rows come from (LinkStage) and where its result goes (LinkEpi).
enum class LinkStage {
    ResidLN,    // x = res + part[0..npart) + part_bias (or the embedding when tokens is set), then LayerNorm
    AttnMerge,  // the merged attention partials of the block's heads (K slice = whole heads)
    Plain,      // floatX rows x[M][K] (the block's K slice)
};
enum class LinkEpi {
    QKV,      // + bias; Q -> out[M][C], K and V -> the cache at *d_pos
    Partial,  // fout[split][M][N] = the block's partial sum (no bias: the consumer adds it)
    Gelu,     // out[M][N] = GELU(+ bias)
    Resid,    // fout[M][N] += result + bias (fp32 residual, in place; splits must be 1)
    Logits,   // fout[M][N] = logits (the block loops over vocabulary tiles), optional greedy argmax
};

constexpr int kLinkMaxParts = 4;  // partial sums a ResidLN consumer adds at most

// Stage names of the stamps (stamps.cuh, engine/trace.h StampRecorder::take) of the two link kernels.
constexpr const char* kLinkProductStages = "prologue,wait,input,mma,epilogue,argmax";
constexpr const char* kLinkAttentionStages = "prologue,wait,keys,merge";

struct LinkArgs {
    int M = 0, N = 0, K = 0, splits = 1;  // out[M,N] = f(in[M,K]) @ w[N,K]^T; K cut into `splits` slices
    const floatX* w = nullptr;
    const floatX* bias = nullptr;  // [N]: QKV, Gelu, Resid
    // ResidLN
    const float* res = nullptr;    // [M][K] fp32 residual; nullptr with tokens: the embedding instead
    const float* part = nullptr;   // [npart][M][K] partial sums of the previous product
    int npart = 0;
    const floatX* part_bias = nullptr;  // [K], added with the partial sums (when npart > 0)
    const int* tokens = nullptr;        // embedding: token [m * maxT + pos] of row m
    const floatX *wte = nullptr, *wpe = nullptr;
    float* res_out = nullptr;           // the completed residual x (written once, spread over the blocks)
    const floatX *ln_w = nullptr, *ln_b = nullptr;
    // AttnMerge
    const float* attn_part = nullptr;  // [M][NH][max_splits][HS + 2]
    AttnSplits as;
    int NH = 0;
    // Plain
    const floatX* x = nullptr;  // [M][K]
    // epilogues
    floatX* out = nullptr;  // QKV: q [M][C]; Gelu: [M][N]
    float* fout = nullptr;  // Partial: [splits][M][N]; Resid: [M][N]; Logits: [M][N]
    floatX *kcache = nullptr, *vcache = nullptr;
    int C = 0, maxT = 0;
    int* d_pos = nullptr;
    // Logits, greedy: argmax [M] zeroed keys and one zeroed int ticket (left zeroed again); token pos+1 of row m
    // goes to tok_out[m * maxT + pos + 1] (ids < V), then *d_pos += 1.
    unsigned long long* argmax = nullptr;
    int* ticket = nullptr;
    int* tok_out = nullptr;
    int V = 0;
    bool late_trigger = false;  // let the next link start after this one's wait instead of at its start
    StageStamps stamps;
};

// Whether the v2 products run these shapes (16-bit build, sm_80+, M <= 16, shared memory enough for one tile).
bool link_product_supported(LinkStage st, const LinkArgs& a);
// Launches one product link (PDL when pdl).
void link_product(LinkStage st, LinkEpi ep, const LinkArgs& a, bool pdl, cudaStream_t s);
// How a projection (N = C outputs that feed the residual) runs: `splits` K slices (whole heads when head_size > 0)
// so that every SM has a share and the tile fits shared memory; with one slice the epilogue adds into the
// residual (Resid); with more, the partial sums go to the consumer (direct: it adds them while staging, when
// (1 + splits) rows of M x N floats stay small) or to link_reduce first, which wins when only it gives every SM
// a share (unless prefer_direct). splits = -1: no split fits.
struct ProjPlan {
    int splits = 1;
    bool direct = true;
    LinkEpi epi = LinkEpi::Resid;
};
ProjPlan link_proj_plan(LinkStage st, int M, int N, int K, int head_size, bool prefer_direct);
// res[M][N] += the `splits` partial sums in order + bias (PDL when pdl).
void link_reduce(float* res, const float* part, const floatX* bias, int splits, int M, int N, bool pdl,
                 cudaStream_t s);

struct AttnLinkArgs {
    const floatX* q = nullptr;  // [B][C]
    const floatX *kc = nullptr, *vc = nullptr;
    const int* d_pos = nullptr;
    float* part = nullptr;  // [B][NH][max_splits][HS + 2]
    int B = 0, NH = 0, HS = 0, maxT = 0;
    AttnSplits as;
    bool late_trigger = false;
    StageStamps stamps;
};
// The splits the attention link will use for B rows (the grid it launches).
AttnSplits link_attention_splits(int B, int NH, int maxT);
size_t link_attention_scratch(int B, int NH, int HS, int maxT);  // floats of partials
void link_attention(const AttnLinkArgs& a, bool pdl, cudaStream_t s);

}  // namespace gd
