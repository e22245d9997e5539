// validate: naive picks each token greedily; the cached variants are fed the same tokens (teacher forcing)
// and their logits are compared with naive's at every step.
#include <algorithm>
#include <cmath>
#include <memory>

#include "../common/check.h"
#include "../engine/protocol.h"
#include "../engine/session.h"

using namespace gd;

namespace {

struct Tolerance {
    float max_abs, max_rmse, min_match;
};

Tolerance default_tolerance() {
#if defined(PRECISION_FP32)
    return {2e-3f, 2e-4f, 1.0f};
#elif defined(PRECISION_FP16)
    return {5e-2f, 1e-2f, 0.9f};
#else
    return {2.5e-1f, 5e-2f, 0.8f};
#endif
}

std::string top3(const float* x, int V) {
    int best[3] = {-1, -1, -1};
    for (int i = 0; i < V; i++) {
        for (int k = 0; k < 3; k++) {
            if (best[k] < 0 || x[i] > x[best[k]]) {
                for (int j = 2; j > k; j--) best[j] = best[j - 1];
                best[k] = i;
                break;
            }
        }
    }
    std::string s;
    for (int k = 0; k < 3 && best[k] >= 0; k++) s += strfmt("%s%d:%.5g", k ? ";" : "", best[k], x[best[k]]);
    return s;
}

int argmax(const float* x, int V) {
    int b = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

struct Summary {
    double max_abs = 0, max_rmse = 0;
    long matches = 0, pairs = 0;
};

void copy_logits(std::vector<float>& host, const Runner& r, const Session& s) {
    CUDA_CHECK(cudaMemcpy2DAsync(host.data(), s.cfg.vocab_size * sizeof(float), r.logits(),
                                 s.cfg.padded_vocab * sizeof(float), s.cfg.vocab_size * sizeof(float), s.args.batch,
                                 cudaMemcpyDeviceToHost, s.stream));
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

}  // namespace

int main(int argc, char** argv) {
    Session s;
    open_session(s, Program::Validate, argc, argv);
    const Args& a = s.args;
    const int B = a.batch, V = s.cfg.vocab_size, P = (int)s.prompt.size(), maxT = s.cfg.max_seq_len;
    Tolerance tol = default_tolerance();
    if (a.max_abs >= 0) tol.max_abs = a.max_abs;
    if (a.max_rmse >= 0) tol.max_rmse = a.max_rmse;
    if (a.min_match >= 0) tol.min_match = a.min_match;
    print_config(s, "naive");

    size_t need = runner_bytes(s.cfg, make_variant("naive", a), B, P + a.gen - 1);
    const int chunk = prefill_chunk(s.cfg, B, P);
    for (auto& name : a.variants) need += runner_bytes(s.cfg, make_variant(name, a), B, chunk);
    check_fits(need, "validate's runners (naive + cached variants)");
    Runner naive(s.cfg, s.weights, make_variant("naive", a), B, P + a.gen - 1, s.d_tokens, s.stream);
    std::vector<std::unique_ptr<Runner>> cached;
    size_t act = naive.act_bytes(), kv = naive.kv_bytes();
    for (auto& name : a.variants) {
        Variant v = make_variant(name, a);
        cached.emplace_back(new Runner(s.cfg, s.weights, v, B, chunk, s.d_tokens, s.stream));
        act += cached.back()->act_bytes();
        kv += cached.back()->kv_bytes();
    }
    print_memory(s, act, kv);

    SamplingParams greedy = s.sampling;
    greedy.greedy = 1;
    std::vector<float> ref((size_t)B * V), test((size_t)B * V);
    std::vector<int> ref_tok(B);
    std::vector<Summary> sum(cached.size());
    for (int step = 0; step < a.gen; step++) {
        naive.set_position(0);
        naive.forward(P + step);
        naive.sample(P + step, greedy);
        copy_logits(ref, naive, s);
        CUDA_CHECK(cudaMemcpy2D(ref_tok.data(), sizeof(int), s.d_tokens + P + step, maxT * sizeof(int), sizeof(int),
                                B, cudaMemcpyDeviceToHost));
        for (size_t vi = 0; vi < cached.size(); vi++) {
            Runner& r = *cached[vi];
            if (step == 0) {
                r.prefill(P, false, greedy);
            } else {
                r.decode_step(false, greedy);
            }
            copy_logits(test, r, s);
            for (int b = 0; b < B; b++) {
                const float* x = ref.data() + (size_t)b * V;
                const float* y = test.data() + (size_t)b * V;
                double mx = 0, se = 0, ref2 = 0;
                bool finite = true;
                for (int i = 0; i < V; i++) {
                    double d = (double)y[i] - x[i];
                    if (!std::isfinite(y[i]) || !std::isfinite(x[i])) finite = false;
                    mx = std::max(mx, std::fabs(d));
                    se += d * d;
                    ref2 += (double)x[i] * x[i];
                }
                double rmse = std::sqrt(se / V), rel = ref2 > 0 ? std::sqrt(se / ref2) : std::sqrt(se);
                if (!finite) mx = rmse = rel = INFINITY;
                int tt = argmax(y, V);
                bool match = tt == ref_tok[b];
                Summary& su = sum[vi];
                su.max_abs = std::max(su.max_abs, mx);
                su.max_rmse = std::max(su.max_rmse, rmse);
                su.matches += match;
                su.pairs++;
                Record("vstep")
                    .str("variant", r.variant().name)
                    .num("step", step)
                    .num("pos", P - 1 + step)
                    .num("row", b)
                    .num("max_abs", mx)
                    .num("rmse", rmse)
                    .num("rel_err", rel)
                    .num("ref_tok", ref_tok[b])
                    .num("test_tok", tt)
                    .num("match", (int)match)
                    .str("ref_top3", top3(x, V))
                    .str("test_top3", top3(y, V))
                    .emit();
            }
        }
    }
    int status = 0;
    for (size_t vi = 0; vi < cached.size(); vi++) {
        const Summary& su = sum[vi];
        double frac = su.pairs ? (double)su.matches / su.pairs : 0;
        bool pass = su.max_abs <= tol.max_abs && su.max_rmse <= tol.max_rmse && frac >= tol.min_match;
        if (!pass) status = EXIT_VALIDATION;
        Record("vsummary")
            .str("variant", cached[vi]->variant().name)
            .num("steps", a.gen)
            .num("rows", B)
            .num("max_abs", su.max_abs)
            .num("rmse", su.max_rmse)
            .num("match_frac", frac)
            .num("tol_max_abs", (double)tol.max_abs)
            .num("tol_rmse", (double)tol.max_rmse)
            .num("tol_match", (double)tol.min_match)
            .str("result", pass ? "PASS" : "FAIL")
            .emit();
        if (!a.quiet)
            printf("%-10s vs naive: max|d| %.3g (<= %.3g), max RMSE %.3g (<= %.3g), argmax agreement %.4f (>= %.3g): %s\n",
                   cached[vi]->variant().name.c_str(), su.max_abs, tol.max_abs, su.max_rmse, tol.max_rmse, frac,
                   tol.min_match, pass ? "PASS" : "FAIL");
    }
    print_tokens(s, a.gen);
    finish(status);
    return status;
}
