#include "generate.h"

#include <algorithm>
#include <memory>

#include "../common/check.h"
#include "../engine/protocol.h"
#include "../engine/session.h"

namespace gd {

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

int generate_main(Program program, int argc, char** argv) {
    Session s;
    open_session(s, program, argc, argv);
    const Args& a = s.args;
    Variant v = make_variant(program_name(program), a);
    const int P = (int)s.prompt.size();
    // naive recomputes up to P+gen-1 positions; the cached variants prefill in chunks.
    int max_chunk = v.use_cache ? prefill_chunk(s.cfg, a.batch, P) : P + a.gen - 1;
    print_config(s, v.name);
    check_fits(runner_bytes(s.cfg, v, a.batch, max_chunk), "the activations and KV cache");
    Runner r(s.cfg, s.weights, v, a.batch, max_chunk, s.d_tokens, s.stream);
    print_memory(s, r.act_bytes(), r.kv_bytes());

    std::vector<float> total, prefill, decode, tps;
    int reps = a.warmup + a.repeat;
    for (int i = 0; i < reps; i++) {
        bool warm = i < a.warmup, last = i == reps - 1;
        std::unique_ptr<LogitsDump> dump;
        if (last && !a.dump_logits.empty())
            dump.reset(new LogitsDump(a.dump_logits, a.batch, s.cfg.vocab_size, s.cfg.padded_vocab, P,
                                      a.dump_stride));
        upload_prompt(s);
        GenTiming t = generate(s, r, dump.get());
        float rate = a.batch * a.gen / t.total_ms * 1000.f;
        float step_ms = a.gen > 1 ? t.decode_ms / (a.gen - 1) : 0.f;
        Record("rep")
            .num("index", i)
            .num("warmup", (int)warm)
            .num("total_ms", (double)t.total_ms)
            .num("prefill_ms", (double)t.prefill_ms)
            .num("decode_ms", (double)t.decode_ms)
            .num("step_ms", (double)step_ms)
            .num("tokens_per_s", (double)rate)
            .emit();
        if (warm) continue;
        total.push_back(t.total_ms);
        prefill.push_back(t.prefill_ms);
        decode.push_back(t.decode_ms);
        tps.push_back(rate);
    }
    float dec = median(decode);
    Record("timing")
        .num("reps", (int)total.size())
        .num("total_ms", (double)median(total))
        .num("prefill_ms", (double)median(prefill))
        .num("decode_ms", (double)dec)
        .num("step_ms", (double)(a.gen > 1 ? dec / (a.gen - 1) : 0.f))
        .num("tokens_per_s", (double)median(tps))
        .emit();
    print_tokens(s, a.gen);
    if (!a.quiet)
        printf("%s: %.1f tokens/s (median of %zu), total %.2f ms, time to first token %.3f ms\n", v.name.c_str(),
               median(tps), tps.size(), median(total), median(prefill));
    finish(0);
    return 0;
}

}  // namespace gd
