// profile: prefill, warm-up decode steps, then measured decode steps, each inside NVTX ranges
// (NVTX domain "decode": WARMUP, MEASURE > layer<i> > stage) so nsys capture ranges and ncu filters can target them.
#include "../common/check.h"
#include "../engine/protocol.h"
#include "../engine/session.h"

using namespace gd;

int main(int argc, char** argv) {
    Session s;
    open_session(s, Program::Profile, argc, argv);
    const Args& a = s.args;
    const int P = (int)s.prompt.size();
    if (P + 1 + a.warmup + a.steps > s.cfg.max_seq_len)
        GD_FAIL(EXIT_USAGE, "prompt %d + 1 + --warmup %d + --steps %d exceeds max_seq_len %d", P, a.warmup, a.steps,
                s.cfg.max_seq_len);
    // Stages are launched one by one (no CUDA graph) so every kernel sits inside its named range.
    Variant v = make_variant(a.variant, a);
    print_config(s, v.name);
    const int chunk = prefill_chunk(s.cfg, a.batch, P);
    check_fits(runner_bytes(s.cfg, a.batch, chunk, v.split_attn), "the activations and KV cache");
    Runner r(s.cfg, s.weights, v, a.batch, chunk, s.d_tokens, s.stream);
    print_memory(s, r.act_bytes(), r.kv_bytes());
    StageTimer timer(a.builtin);
    r.timer = &timer;

    timer.push_range("PREFILL");
    r.prefill(P, true, s.sampling);
    timer.pop_range();
    timer.push_range("WARMUP");
    for (int i = 0; i < a.warmup; i++) r.decode_step(true, s.sampling);
    timer.pop_range();
    CUDA_CHECK(cudaStreamSynchronize(s.stream));

    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    timer.counting = true;
    CUDA_CHECK(cudaEventRecord(e0, s.stream));
    for (int i = 0; i < a.steps; i++) {
        timer.push_range("MEASURE");
        r.decode_step(true, s.sampling);
        timer.pop_range();
    }
    CUDA_CHECK(cudaEventRecord(e1, s.stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    auto stats = timer.collect();
    double staged = 0;
    for (auto& st : stats) staged += st.total_ms;
    for (auto& st : stats) {
        Record("stage")
            .str("name", st.name)
            .num("calls", st.calls)
            .num("total_ms", st.total_ms)
            .num("mean_us", st.calls ? st.total_ms * 1000.0 / st.calls : 0.0)
            .num("share", staged > 0 ? st.total_ms / staged : 0.0)
            .emit();
        if (!a.quiet)
            printf("%-10s %6d calls %9.3f ms %9.2f us/call %5.1f%%\n", st.name.c_str(), st.calls, st.total_ms,
                   st.calls ? st.total_ms * 1000.0 / st.calls : 0.0, staged > 0 ? 100 * st.total_ms / staged : 0.0);
    }
    double step_ms = ms / a.steps;
    Record("profile")
        .str("variant", v.name)
        .num("steps", a.steps)
        .num("step_ms", step_ms)
        .num("tokens_per_s", a.batch / step_ms * 1000.0)
        .emit();
    if (!a.quiet) printf("%s: %d measured decode steps, %.4f ms/step\n", v.name.c_str(), a.steps, step_ms);
    finish(0);
    return 0;
}
