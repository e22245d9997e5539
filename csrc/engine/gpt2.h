// The GPT-2 forward pass and generation loop shared by every executable. A Runner owns one variant's
// activations and KV cache; the weights and the token buffer can be shared (validate runs several Runners
// in lockstep over one token buffer).
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../common/precision.h"
#include "../kernels/kernels.cuh"
#include "../kernels/links.cuh"
#include "../model/checkpoint.h"
#include "stage_timer.h"
#include "variant.h"
#include "weights.h"

namespace gd {

class StampRecorder;

// How the v2 decode step (engine/decode_links.cu) runs for a model at B rows: the two projections' K splits and
// the attention's key splits; ok = false: the shape is not one v2 runs (the v1 decode kernels run instead).
struct LinkPlan {
    bool ok = false;
    ProjPlan attproj, fcproj;
    AttnSplits as;
    bool late_trigger = false;  // experiments (GD_LINKS_LATE_TRIGGER=1): links trigger after their wait
};
LinkPlan make_link_plan(const ModelConfig& c, int B);
size_t link_buffer_floats(const ModelConfig& c, int B, const LinkPlan& p);  // residuals, partials, attention

class Runner {
public:
    Runner(const ModelConfig& cfg, const Weights& w, Variant v, int B, int max_chunk, int* tokens, cudaStream_t s);
    ~Runner();
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    // Forward of T tokens per row starting at the device position; logits of the last one into logits().
    // greedy_step (decode steps on the fused path only, see record_decode): the logits kernel also picks the
    // greedy token, stores it and advances the position. logits = false (prefill chunks before the last): stop
    // after the layers.
    void forward(int T, bool greedy_step = false, bool logits = true);
    // Prompt of P tokens per row from position 0, in chunks of at most max_chunk tokens (so the activations stay
    // small); then the next token is sampled when asked, and the position is P.
    void prefill(int P, bool sample, const SamplingParams& sp);
    // One cached decode step (T = 1) at the device position, optionally sampling the next token, then pos += 1.
    void decode_step(bool sample, const SamplingParams& sp);
    void sample(int T, const SamplingParams& sp);
    void set_position(int p) { set_pos(d_pos_, p, stream_); }
    void advance(int by) { advance_pos(d_pos_, by, stream_); }

    const float* logits() const { return logits_; }
    const Variant& variant() const { return v_; }
    size_t act_bytes() const { return act_bytes_; }
    size_t kv_bytes() const { return kv_bytes_; }
    StageTimer* timer = nullptr;
    StampRecorder* stamps = nullptr;  // profile --stamps: stage stamps of the fused decode kernels (engine/trace.h)
    void drop_graphs();  // the next decode steps capture their graph again

private:
    void linear(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int M, int N, int K, bool gelu,
                bool residual);
    void record_decode(bool sample, const SamplingParams& sp);
    bool use_decode_kernels(int M) const;
    void attention(floatX* kc, floatX* vc, int T);
    // The v2 decode step (T = 1; engine/decode_links.cu) and its projections.
    void forward_links(bool greedy_step);
    void link_projection(LinkStage st, LinkArgs a, const ProjPlan& plan, const floatX* bias, int cur, int& pend,
                         const floatX*& pend_bias, const char* name);

    ModelConfig cfg_;
    const Weights& w_;
    Variant v_;
    int B_, max_chunk_;
    int* tokens_;  // [B][maxT], not owned
    cudaStream_t stream_;
    int* d_pos_ = nullptr;
    // ln_ and atty_ share a buffer, as do qkv_ and fch_ (act_sizes in gpt2.cu); tmp_ only for an unfused residual
    floatX *x_, *ln_, *qkv_, *atty_, *fch_, *tmp_, *lnf_, *kcache_, *vcache_;
    float *logits_, *attn_scratch_;
    unsigned long long* argmax_ = nullptr;  // [B] fused greedy maxima, then one int ticket
    size_t act_bytes_ = 0, kv_bytes_ = 0;
    LinkPlan plan_;                                  // ok: decode steps run forward_links
    float *res_[2] = {nullptr, nullptr}, *part_ = nullptr, *attn_part_ = nullptr;  // its buffers
    cudaGraphExec_t graph_[2] = {nullptr, nullptr};  // [sample]
    SamplingParams graph_sp_[2];
};

// Tokens per prefill chunk of a cached Runner: the whole prompt, or as few chunks as keep the chunk's activations
// (7 x C values per token and row at most) within 32 MiB, of equal size (a multiple of 64 where that fits).
int prefill_chunk(const ModelConfig& cfg, int B, int P);
// Bytes a Runner of variant v will allocate (activations, KV cache), for the up-front memory check.
size_t runner_bytes(const ModelConfig& cfg, const Variant& v, int B, int max_chunk);

}  // namespace gd
