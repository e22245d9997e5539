#include "gpt2.h"

#include <algorithm>

#include "../common/check.h"
#include "trace.h"

namespace gd {

// ---------------------------------------------------------------------------------------------------------
// Runner

namespace {
// The v2 decode step runs for a cached variant with every decode trick on and a shape it supports.
LinkPlan link_plan_for(const ModelConfig& c, const Variant& v, int B) {
    if (!(v.use_cache && v.short_links && v.gemv && v.fused && v.split_attn)) return LinkPlan();
    return make_link_plan(c, B);
}

// Per-chunk activations, floatX values: x (the residual stream), one buffer for the LayerNorm output and the
// attention's (never live together), one for the QKV rows and the MLP's hidden rows (QKV is dead once the
// attention has read it), and tmp, the residual's scratch when it is not fused into the products.
struct ActSizes {
    size_t x, tmp, wide, lnf, logits, kv, scratch, links;
};
ActSizes act_sizes(const ModelConfig& c, const Variant& v, int B, int max_chunk) {
    size_t M = (size_t)B * max_chunk, C = c.channels;
    ActSizes a;
    a.x = M * C;
    a.tmp = v.fused ? 0 : M * C;
    a.wide = M * 4 * C;
    a.lnf = (size_t)B * C;
    a.logits = (size_t)B * c.padded_vocab;
    a.kv = (size_t)c.num_layers * B * c.max_seq_len * C;  // per K and per V
    a.scratch = v.split_attn ? attention_split_scratch(B, c.num_heads, C / c.num_heads, c.max_seq_len) : 0;
    a.links = link_buffer_floats(c, B, link_plan_for(c, v, B));
    return a;
}

// floatX values of the per-chunk activations: x, ln/atty, tmp, qkv/fch
size_t chunk_values(const ActSizes& a) { return 2 * a.x + a.tmp + a.wide; }
}  // namespace

size_t runner_bytes(const ModelConfig& cfg, const Variant& v, int B, int max_chunk) {
    ActSizes a = act_sizes(cfg, v, B, max_chunk);
    return (chunk_values(a) + a.lnf + 2 * a.kv) * sizeof(floatX) + (a.logits + a.scratch + a.links) * sizeof(float) +
           sizeof(int) + (B + 1) * sizeof(unsigned long long);
}

Runner::Runner(const ModelConfig& cfg, const Weights& w, Variant v, int B, int max_chunk, int* tokens,
               cudaStream_t s)
    : cfg_(cfg), w_(w), v_(v), B_(B), max_chunk_(max_chunk), tokens_(tokens), stream_(s) {
    ActSizes a = act_sizes(cfg, v, B, max_chunk);
    auto alloc = [&](size_t n, size_t elem, const char* what) {
        act_bytes_ += n * elem;
        return device_alloc(n * elem, what);
    };
    x_ = (floatX*)alloc(a.x, sizeof(floatX), "activations");
    ln_ = atty_ = (floatX*)alloc(a.x, sizeof(floatX), "activations");
    tmp_ = a.tmp ? (floatX*)alloc(a.tmp, sizeof(floatX), "activations") : nullptr;
    qkv_ = fch_ = (floatX*)alloc(a.wide, sizeof(floatX), "activations");
    lnf_ = (floatX*)alloc(a.lnf, sizeof(floatX), "activations");
    logits_ = (float*)alloc(a.logits, sizeof(float), "logits");
    attn_scratch_ = a.scratch ? (float*)alloc(a.scratch, sizeof(float), "attention scratch") : nullptr;
    if (attn_scratch_) CUDA_CHECK(cudaMemset(attn_scratch_, 0, a.scratch * sizeof(float)));
    d_pos_ = (int*)alloc(1, sizeof(int), "position");
    argmax_ = (unsigned long long*)alloc(B + 1, sizeof(unsigned long long), "argmax");
    CUDA_CHECK(cudaMemset(argmax_, 0, (B + 1) * sizeof(unsigned long long)));
    plan_ = link_plan_for(cfg, v, B);
    if (plan_.ok) {  // residual buffers, the projections' partial sums, the attention's partials
        res_[0] = (float*)alloc(a.links, sizeof(float), "the v2 decode buffers");
        res_[1] = res_[0] + (size_t)B * cfg.channels;
        part_ = res_[1] + (size_t)B * cfg.channels;
        attn_part_ = part_ + (size_t)std::max(plan_.attproj.splits, plan_.fcproj.splits) * B * cfg.channels;
    }
    kcache_ = (floatX*)device_alloc(a.kv * sizeof(floatX), "the KV cache");
    vcache_ = (floatX*)device_alloc(a.kv * sizeof(floatX), "the KV cache");
    kv_bytes_ = 2 * a.kv * sizeof(floatX);
    set_position(0);
}

void Runner::drop_graphs() {
    for (auto& g : graph_)
        if (g) cudaGraphExecDestroy(g), g = nullptr;
}

Runner::~Runner() {
    drop_graphs();
    for (void* p : {(void*)x_, (void*)ln_, (void*)tmp_, (void*)qkv_, (void*)lnf_,
                    (void*)logits_, (void*)attn_scratch_, (void*)res_[0], (void*)d_pos_, (void*)argmax_, (void*)kcache_, (void*)vcache_})
        if (p) cudaFree(p);
}

void Runner::linear(floatX* out, const floatX* inp, const floatX* w, const floatX* b, int M, int N, int K, bool gelu,
                    bool residual) {
    // The CUDA-core GEMV only for a few rows: from kGemvFastM rows on it is instruction-bound and cuBLAS is
    // faster (gpt2-xl at B = 16, whose fused decode products do not fit shared memory, fell to it: 124 us per
    // MLP projection, 3.6x kvonly's step).
    bool use_gemv = v_.gemv && gemv_supported(M, K) && M <= kGemvFastM;
    bool fuse_res = residual && v_.fused;
    bool fuse_gelu = gelu && v_.fused;  // in the gemv kernel, or cuBLASLt's epilogue when it has one
    floatX* dst = residual && !fuse_res ? tmp_ : out;
    if (use_gemv)
        gemv_forward(dst, inp, w, b, M, N, K, fuse_gelu, fuse_res, stream_);
    else
        fuse_gelu = matmul_forward(dst, inp, w, b, M, N, K, fuse_res, fuse_gelu, stream_);
    if (gelu && !fuse_gelu) gelu_forward(dst, (size_t)M * N, stream_);
    if (residual && !fuse_res) residual_forward(out, tmp_, (size_t)M * N, stream_);
}

bool Runner::use_decode_kernels(int M) const {
    const int C = cfg_.channels;
    return v_.gemv && v_.fused && decode_linear_supported(M, 3 * C, C, true) &&
           decode_linear_supported(M, C, 4 * C, false) && decode_linear_supported(M, cfg_.padded_vocab, C, true);
}

void Runner::attention(floatX* kc, floatX* vc, int T) {
    const int B = B_, NH = cfg_.num_heads, HS = cfg_.channels / NH, maxT = cfg_.max_seq_len;
    if (T == 1 && v_.split_attn)
        attention_decode_split(atty_, qkv_, kc, vc, d_pos_, attn_scratch_, B, NH, HS, maxT, v_.pdl, stream_);
    else
        attention_forward(atty_, qkv_, kc, vc, d_pos_, B, T, NH, HS, maxT, stream_);
}

void Runner::forward(int T, bool greedy_step, bool logits) {
    if (T < 1 || T > max_chunk_) GD_FAIL(EXIT_CUDA, "internal: chunk of %d tokens exceeds %d", T, max_chunk_);
    const int B = B_, C = cfg_.channels, L = cfg_.num_layers, NH = cfg_.num_heads, HS = C / NH;
    const int maxT = cfg_.max_seq_len, M = B * T;
    const size_t CC = (size_t)C * C;
    // Decode steps of 16-bit builds: tensor-core products with LayerNorm, bias, GELU, residual and the
    // KV-cache store fused in (5 kernels per layer).
    if (T == 1 && plan_.ok && logits) {  // the v2 decode step: short links
        forward_links(greedy_step);
        return;
    }
    const bool fast = T == 1 && use_decode_kernels(M);
    {
        StageScope stage(timer, "embedding", stream_);
        embedding_forward(x_, tokens_, w_.wte, w_.wpe, d_pos_, B, T, C, maxT, stream_);
    }
    char layer_name[32];
    for (int l = 0; l < L; l++) {
        if (timer) {
            snprintf(layer_name, sizeof layer_name, "layer%d", l);
            timer->push_range(layer_name);
        }
        floatX* kc = kcache_ + (size_t)l * B * maxT * C;
        floatX* vc = vcache_ + (size_t)l * B * maxT * C;
        const int wl = v_.one_layer_weights ? 0 : l;  // the layer whose weights this layer reads
        const floatX *qkvw = w_.qkvw + wl * 3 * CC, *qkvb = w_.qkvb + wl * 3 * C;
        const floatX *attprojw = w_.attprojw + wl * CC, *attprojb = w_.attprojb + wl * C;
        const floatX *fcw = w_.fcw + wl * 4 * CC, *fcb = w_.fcb + wl * 4 * C;
        const floatX *fcprojw = w_.fcprojw + wl * 4 * CC, *fcprojb = w_.fcprojb + wl * C;
        const floatX *ln1w = w_.ln1w + wl * C, *ln1b = w_.ln1b + wl * C, *ln2w = w_.ln2w + wl * C, *ln2b = w_.ln2b + wl * C;
        if (fast) {
            DecodeEpilogue qe;
            qe.bias = qkvb, qe.ln_w = ln1w, qe.ln_b = ln1b, qe.kcache = kc, qe.vcache = vc, qe.d_pos = d_pos_;
            qe.C = C, qe.NH = NH, qe.maxT = maxT;
            if (stamps) qe.stamps = stamps->take("linear_mma_kernel", "qkv", kDecodeLinearStages);
            {
                StageScope stage(timer, "qkv", stream_);
                decode_linear(qkv_, x_, qkvw, M, 3 * C, C, qe, v_.pdl, stream_);
            }
            {
                StageScope stage(timer, "attn", stream_);
                attention(kc, vc, T);
            }
            DecodeEpilogue pe;
            pe.bias = attprojb, pe.accumulate = true;
            if (stamps) pe.stamps = stamps->take("linear_mma_kernel", "attproj", kDecodeLinearStages);
            {
                StageScope stage(timer, "attproj", stream_);
                decode_linear(x_, atty_, attprojw, M, C, C, pe, v_.pdl, stream_);
            }
            DecodeEpilogue fe;
            fe.bias = fcb, fe.gelu = true, fe.ln_w = ln2w, fe.ln_b = ln2b;
            if (stamps) fe.stamps = stamps->take("linear_mma_kernel", "fc", kDecodeLinearStages);
            {
                StageScope stage(timer, "fc", stream_);
                decode_linear(fch_, x_, fcw, M, 4 * C, C, fe, v_.pdl, stream_);
            }
            DecodeEpilogue re;
            re.bias = fcprojb, re.accumulate = true;
            if (stamps) re.stamps = stamps->take("linear_mma_kernel", "fcproj", kDecodeLinearStages);
            {
                StageScope stage(timer, "fcproj", stream_);
                decode_linear(x_, fch_, fcprojw, M, C, 4 * C, re, v_.pdl, stream_);
            }
        } else {
            {
                StageScope stage(timer, "ln1", stream_);
                layernorm_forward(ln_, x_, ln1w, ln1b, M, C, 1, 0, stream_);
            }
            {
                StageScope stage(timer, "qkv", stream_);
                linear(qkv_, ln_, qkvw, qkvb, M, 3 * C, C, false, false);
            }
            {
                StageScope stage(timer, "attn", stream_);
                if (!(T == 1 && v_.split_attn && attention_decode_stores_kv(B)))
                    kv_store(kc, vc, qkv_, d_pos_, B, T, NH, HS, maxT, stream_);
                attention(kc, vc, T);
            }
            {
                StageScope stage(timer, "attproj", stream_);
                linear(x_, atty_, attprojw, attprojb, M, C, C, false, true);
            }
            {
                StageScope stage(timer, "ln2", stream_);
                layernorm_forward(ln_, x_, ln2w, ln2b, M, C, 1, 0, stream_);
            }
            {
                StageScope stage(timer, "fc", stream_);
                linear(fch_, ln_, fcw, fcb, M, 4 * C, C, true, false);
            }
            {
                StageScope stage(timer, "fcproj", stream_);
                linear(x_, fch_, fcprojw, fcprojb, M, C, 4 * C, false, true);
            }
        }
        if (timer) timer->pop_range();
    }
    if (!logits) return;  // a prefill chunk before the last: its logits are never read
    if (fast) {
        DecodeEpilogue le;
        le.ln_w = w_.lnfw, le.ln_b = w_.lnfb;
        if (greedy_step) {  // greedy: argmax, token store and pos += 1 in the logits kernel
            le.argmax = argmax_, le.ticket = reinterpret_cast<int*>(argmax_ + B);
            le.tokens = tokens_, le.d_pos = d_pos_, le.maxT = maxT, le.V = cfg_.vocab_size;
        }
        if (stamps) le.stamps = stamps->take("linear_mma_kernel", "logits", kDecodeLinearStages);
        {
            StageScope stage(timer, "logits", stream_);
            decode_logits(logits_, x_, w_.wte, B, cfg_.padded_vocab, C, le, v_.pdl, stream_);
        }
        return;
    }
    {
        StageScope stage(timer, "lnf", stream_);
        layernorm_forward(lnf_, x_, w_.lnfw, w_.lnfb, B, C, T, T - 1, stream_);
    }
    {
        StageScope stage(timer, "logits", stream_);
        if (v_.gemv && v_.fused && decode_linear_supported(B, cfg_.padded_vocab, C, false))  // the decode logits kernel (no LN)
            decode_logits(logits_, lnf_, w_.wte, B, cfg_.padded_vocab, C, DecodeEpilogue(), v_.pdl, stream_);
        else if (v_.gemv && gemv_supported(B, C))
            gemv_logits(logits_, lnf_, w_.wte, B, cfg_.padded_vocab, C, stream_);
        else
            matmul_logits(logits_, lnf_, w_.wte, B, cfg_.padded_vocab, C, stream_);
    }
}

void Runner::sample(int T, const SamplingParams& sp) {
    {
        StageScope stage(timer, "sample", stream_);
        sample_tokens(tokens_, logits_, d_pos_, T, B_, cfg_.vocab_size, cfg_.padded_vocab, cfg_.max_seq_len, sp, argmax_,
                      stream_);
    }
}

int prefill_chunk(const ModelConfig& cfg, int B, int P) {
    Variant unfused;  // the larger case: with the residual's scratch
    unfused.fused = false;
    const size_t per_token = chunk_values(act_sizes(cfg, unfused, B, 1)) * sizeof(floatX);
    const int fit = (int)std::max<size_t>(1, std::min<size_t>((size_t)P, ((size_t)32 << 20) / per_token));
    // As few chunks as fit, of equal size rounded up to the prefill attention's 64 queries where that still fits
    // (512 tokens at B = 16: 192 + 192 + 128, not 195 + 195 + 122).
    const int chunks = (P + fit - 1) / fit, even = (P + chunks - 1) / chunks, round = (even + 63) / 64 * 64;
    return round <= fit ? std::min(round, P) : even;
}

void Runner::prefill(int P, bool do_sample, const SamplingParams& sp) {
    set_position(0);
    for (int done = 0; done < P;) {
        const int T = std::min(max_chunk_, P - done);
        forward(T, false, done + T == P);
        done += T;
        if (done == P && do_sample) sample(T, sp);  // token P of each row, from the last chunk's logits
        advance(T);
    }
}

void Runner::record_decode(bool do_sample, const SamplingParams& sp) {
    const bool fused = do_sample && sp.greedy && (plan_.ok || use_decode_kernels(B_));
    forward(1, fused);
    if (fused) return;  // the logits kernel picked the token and advanced the position
    if (do_sample) sample(1, sp);
    advance(1);
}

void Runner::decode_step(bool do_sample, const SamplingParams& sp) {
    if (!v_.use_cache) GD_FAIL(EXIT_CUDA, "internal: decode_step on a variant without cache");
    if (!v_.graph || timer) {
        record_decode(do_sample, sp);
        return;
    }
    cudaGraphExec_t& g = graph_[do_sample ? 1 : 0];
    const SamplingParams& old = graph_sp_[do_sample ? 1 : 0];
    bool same_sp = old.greedy == sp.greedy && old.temperature == sp.temperature && old.top_k == sp.top_k &&
                   old.top_p == sp.top_p && old.seed == sp.seed;
    if (g && !same_sp) {
        CUDA_CHECK(cudaGraphExecDestroy(g));
        g = nullptr;
    }
    if (!g) {
        cudaGraph_t graph;
        CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        record_decode(do_sample, sp);
        CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
        CUDA_CHECK(cudaGraphInstantiate(&g, graph, 0));
        CUDA_CHECK(cudaGraphDestroy(graph));
        graph_sp_[do_sample ? 1 : 0] = sp;
    }
    CUDA_CHECK(cudaGraphLaunch(g, stream_));
}

}  // namespace gd
