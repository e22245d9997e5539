// Decode v2, the host side: how a Runner records one decode step as short links (kernels/links.cuh), in the
// order they run. The residual stream lives in res_[cur] (fp32 [B][C]); `pend` partial sums of the last
// projection (and their bias) may still be waiting in part_ for the next LayerNorm'd product to add them, which
// then writes the completed residual into the other buffer.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "../common/check.h"
#include "../kernels/links.cuh"
#include "gpt2.h"
#include "trace.h"

namespace gd {

LinkPlan make_link_plan(const ModelConfig& c, int B) {
    LinkPlan p;
    const int C = c.channels, NH = c.num_heads, HS = C / NH;
    p.ok = HS == 64 && B >= 1 && B <= 16 && c.padded_vocab % 16 == 0;
    if (!p.ok) return p;
    // Experiments: GD_LINKS_PREFER_DIRECT=1 (the projections never add a reduce link), GD_LINKS_ONE_SPLIT=1 (no
    // K splits: the projections add into the residual), GD_LINKS_LATE_TRIGGER=1.
    auto env_on = [](const char* name) {
        const char* e = getenv(name);
        return e && e[0] == '1';
    };
    p.attproj = link_proj_plan(LinkStage::AttnMerge, B, C, C, HS, env_on("GD_LINKS_PREFER_DIRECT"));
    p.fcproj = link_proj_plan(LinkStage::Plain, B, C, 4 * C, 0, env_on("GD_LINKS_PREFER_DIRECT"));
    if (env_on("GD_LINKS_ONE_SPLIT")) {
        p.attproj = ProjPlan();
        p.fcproj = ProjPlan();
    }
    p.late_trigger = env_on("GD_LINKS_LATE_TRIGGER");
    p.as = link_attention_splits(B, NH, c.max_seq_len);
    LinkArgs qkv, fc, logits;
    qkv.M = fc.M = logits.M = B;
    qkv.K = fc.K = logits.K = C;
    qkv.N = 3 * C, fc.N = 4 * C, logits.N = c.padded_vocab;
    p.ok = p.attproj.splits > 0 && p.fcproj.splits > 0 && link_product_supported(LinkStage::ResidLN, qkv) &&
           link_product_supported(LinkStage::ResidLN, fc) && link_product_supported(LinkStage::ResidLN, logits);
    return p;
}

size_t link_buffer_floats(const ModelConfig& c, int B, const LinkPlan& p) {
    if (!p.ok) return 0;
    const int C = c.channels;
    const int parts = std::max(p.attproj.splits, p.fcproj.splits);
    return 2 * (size_t)B * C + (size_t)parts * B * C + link_attention_scratch(B, c.num_heads, C / c.num_heads, c.max_seq_len);
}

// One projection (attproj, fcproj) by its plan: into the residual (one split), or partial sums for the next
// LayerNorm'd product (pend), or partial sums reduced into the residual by one more link.
void Runner::link_projection(LinkStage st, LinkArgs a, const ProjPlan& plan, const floatX* bias, int cur, int& pend,
                             const floatX*& pend_bias, const char* name) {
    a.splits = plan.splits;
    a.late_trigger = plan_.late_trigger;
    if (plan.epi == LinkEpi::Resid) {
        a.bias = bias;
        a.fout = res_[cur];
    } else {
        a.fout = part_;
    }
    if (stamps) a.stamps = stamps->take("link_product_kernel", name, kLinkProductStages);
    {
        StageScope stage(timer, name, stream_);
        link_product(st, plan.epi, a, v_.pdl, stream_);
    }
    pend = 0;
    if (plan.epi == LinkEpi::Partial && plan.direct) {
        pend = plan.splits;
        pend_bias = bias;
    } else if (plan.epi == LinkEpi::Partial) {
        {
            StageScope stage(timer, "reduce", stream_);
            link_reduce(res_[cur], part_, bias, plan.splits, a.M, a.N, v_.pdl, stream_);
        }
    }
}

void Runner::forward_links(bool greedy_step) {
    const int B = B_, C = cfg_.channels, L = cfg_.num_layers, NH = cfg_.num_heads, HS = C / NH;
    const int maxT = cfg_.max_seq_len;
    const size_t CC = (size_t)C * C;
    int cur = 0, pend = 0;
    const floatX* pend_bias = nullptr;
    // A LayerNorm'd product (qkv, fc, logits) takes the residual and the pending partial sums; when it adds
    // partials it also writes the completed residual, into the other buffer.
    auto resid_input = [&](LinkArgs& a) {
        a.res = res_[cur];
        a.part = part_;
        a.npart = pend;
        a.part_bias = pend_bias;
        if (pend) a.res_out = res_[1 - cur];
    };
    auto resid_done = [&](const LinkArgs& a) {
        if (a.res_out && a.res) cur = 1 - cur;
        pend = 0;
    };
    char layer_name[32];
    for (int l = 0; l < L; l++) {
        if (timer) {
            snprintf(layer_name, sizeof layer_name, "layer%d", l);
            timer->push_range(layer_name);
        }
        floatX* kc = kcache_ + (size_t)l * B * maxT * C;
        floatX* vc = vcache_ + (size_t)l * B * maxT * C;
        const int wl = v_.one_layer_weights ? 0 : l;
        LinkArgs q;
        q.M = B, q.N = 3 * C, q.K = C, q.w = w_.qkvw + wl * 3 * CC, q.bias = w_.qkvb + wl * 3 * C;
        q.ln_w = w_.ln1w + wl * C, q.ln_b = w_.ln1b + wl * C;
        if (l == 0) {  // the embedding of the step's token, written as the residual
            q.tokens = tokens_, q.wte = w_.wte, q.wpe = w_.wpe, q.res_out = res_[cur];
        } else {
            resid_input(q);
        }
        q.out = qkv_, q.kcache = kc, q.vcache = vc, q.C = C, q.NH = NH, q.maxT = maxT, q.d_pos = d_pos_;
        q.late_trigger = plan_.late_trigger;
        if (stamps) q.stamps = stamps->take("link_product_kernel", "qkv", kLinkProductStages);
        {
            StageScope stage(timer, "qkv", stream_);
            // The step's first link waits for the whole previous step (its token and position): no PDL there.
            link_product(LinkStage::ResidLN, LinkEpi::QKV, q, l == 0 ? false : v_.pdl, stream_);
        }
        resid_done(q);

        AttnLinkArgs at;
        at.q = qkv_, at.kc = kc, at.vc = vc, at.d_pos = d_pos_, at.part = attn_part_;
        at.B = B, at.NH = NH, at.HS = HS, at.maxT = maxT, at.as = plan_.as, at.late_trigger = plan_.late_trigger;
        if (stamps) at.stamps = stamps->take("link_attention_kernel", "attn", kLinkAttentionStages);
        {
            StageScope stage(timer, "attn", stream_);
            link_attention(at, v_.pdl, stream_);
        }

        LinkArgs p;
        p.M = B, p.N = C, p.K = C, p.w = w_.attprojw + wl * CC, p.attn_part = attn_part_, p.as = plan_.as;
        p.NH = NH, p.d_pos = d_pos_;
        link_projection(LinkStage::AttnMerge, p, plan_.attproj, w_.attprojb + wl * C, cur, pend, pend_bias, "attproj");

        LinkArgs f;
        f.M = B, f.N = 4 * C, f.K = C, f.w = w_.fcw + wl * 4 * CC, f.bias = w_.fcb + wl * 4 * C;
        f.ln_w = w_.ln2w + wl * C, f.ln_b = w_.ln2b + wl * C, f.out = fch_, f.d_pos = d_pos_;
        f.late_trigger = plan_.late_trigger;
        resid_input(f);
        if (stamps) f.stamps = stamps->take("link_product_kernel", "fc", kLinkProductStages);
        {
            StageScope stage(timer, "fc", stream_);
            link_product(LinkStage::ResidLN, LinkEpi::Gelu, f, v_.pdl, stream_);
        }
        resid_done(f);

        LinkArgs r;
        r.M = B, r.N = C, r.K = 4 * C, r.w = w_.fcprojw + wl * 4 * CC, r.x = fch_, r.d_pos = d_pos_;
        link_projection(LinkStage::Plain, r, plan_.fcproj, w_.fcprojb + wl * C, cur, pend, pend_bias, "fcproj");
        if (timer) timer->pop_range();
    }
    LinkArgs g;
    g.M = B, g.N = cfg_.padded_vocab, g.K = C, g.w = w_.wte, g.ln_w = w_.lnfw, g.ln_b = w_.lnfb;
    resid_input(g);
    g.res_out = nullptr;  // nothing reads the residual after the logits
    g.fout = logits_, g.d_pos = d_pos_, g.late_trigger = plan_.late_trigger;
    if (greedy_step) {  // argmax, token store and pos += 1 in the logits link
        g.argmax = argmax_, g.ticket = reinterpret_cast<int*>(argmax_ + B), g.tok_out = tokens_, g.maxT = maxT;
        g.V = cfg_.vocab_size;
    }
    if (stamps) g.stamps = stamps->take("link_product_kernel", "logits", kLinkProductStages);
    {
        StageScope stage(timer, "logits", stream_);
        link_product(LinkStage::ResidLN, LinkEpi::Logits, g, v_.pdl, stream_);
    }
}

}  // namespace gd
