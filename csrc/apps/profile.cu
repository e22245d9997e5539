// profile: prefill, warm-up decode steps, then measured decode steps, each inside NVTX ranges
// (NVTX domain "decode": WARMUP, MEASURE > layer<i> > stage) so nsys capture ranges and ncu filters can target them.
// --trace: the measured steps run the way the variant normally runs (optimized: CUDA graph replays), first
// untraced (their step time), then traced through CUPTI (engine/trace.h) after a LABEL step that launches the
// same kernels one by one inside the stage ranges, synchronizing before each range closes (what names a graph
// replay's kernels, and places kernels when CUPTI gives no launch calls); --stamps adds the fused decode
// kernels' stage timestamps.
#include <memory>

#include "../common/check.h"
#include "../engine/protocol.h"
#include "../engine/session.h"
#include "../engine/trace.h"

using namespace gd;

int main(int argc, char** argv) {
    // --trace: find CUPTI before anything else, so a missing library is the one error reported.
    Tracer tracer;
    if (parse_args(Program::Profile, argc, argv).trace && !tracer.load())
        GD_FAIL(EXIT_CUDA, "cannot trace: %s", tracer.why().c_str());
    Session s;
    open_session(s, Program::Profile, argc, argv);
    const Args& a = s.args;
    const int P = (int)s.prompt.size();
    const int trace_steps = a.trace ? a.steps + 3 : 0;  // traced: LABEL, 2 warm-up, the measured steps
    if (P + 1 + a.warmup + a.steps + trace_steps > s.cfg.max_seq_len)
        GD_FAIL(EXIT_USAGE, "prompt %d + 1 + --warmup %d + --steps %d%s exceeds max_seq_len %d", P, a.warmup, a.steps,
                a.trace ? " (twice with --trace, + 3)" : "", s.cfg.max_seq_len);
    Variant v = make_variant(a.variant, a);
    print_config(s, v.name);
    const int chunk = prefill_chunk(s.cfg, a.batch, P);
    check_fits(runner_bytes(s.cfg, v, a.batch, chunk), "the activations and KV cache");
    Runner r(s.cfg, s.weights, v, a.batch, chunk, s.d_tokens, s.stream);
    print_memory(s, r.act_bytes(), r.kv_bytes());
    StageTimer timer(a.builtin);
    r.timer = &timer;
    // Without --trace the stages are launched one by one (no CUDA graph) so every kernel sits inside its named
    // range. With --trace a variant with a graph replays it (no timer on the runner: stages come from LABEL).
    const bool graph = a.trace && v.graph;
    std::unique_ptr<StampRecorder> stamps;
    // A slot per stamped launch of a step: v1 stamps 4 products per layer + logits, the v2 links (--short-links)
    // qkv, attn, attproj, fc, fcproj per layer + logits (61 at L = 12); launches past the last slot are counted
    // (stamp_missed) and fail the stamps check.
    constexpr int kStampedPerLayer = 5;
    if (a.stamps) stamps.reset(new StampRecorder(kStampedPerLayer * s.cfg.num_layers + 8, 1024));

    timer.push_range("PREFILL");
    r.prefill(P, true, s.sampling);
    timer.pop_range();
    if (graph) r.timer = nullptr;
    r.stamps = stamps.get();
    auto step = [&]() {
        if (stamps && !graph) stamps->restart();  // one-by-one launches take their slots again each step
        r.decode_step(true, s.sampling);
    };
    timer.push_range("WARMUP");
    for (int i = 0; i < a.warmup; i++) step();
    timer.pop_range();
    CUDA_CHECK(cudaStreamSynchronize(s.stream));

    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    auto measure = [&]() {  // --steps steps in MEASURE ranges, ms per step by CUDA events
        CUDA_CHECK(cudaEventRecord(e0, s.stream));
        for (int i = 0; i < a.steps; i++) {
            timer.push_range("MEASURE");
            step();
            timer.pop_range();
        }
        CUDA_CHECK(cudaEventRecord(e1, s.stream));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        return (double)ms / a.steps;
    };
    timer.counting = true;
    const double step_ms = measure();
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
    Record("profile")
        .str("variant", v.name)
        .num("steps", a.steps)
        .num("step_ms", step_ms)
        .num("tokens_per_s", a.batch / step_ms * 1000.0)
        .emit();
    if (!a.quiet) printf("%s: %d measured decode steps, %.4f ms/step\n", v.name.c_str(), a.steps, step_ms);

    if (a.trace) {
        const int run_warmup = 2;  // traced steps between LABEL and the measured ones
        if (!tracer.start()) GD_FAIL(EXIT_CUDA, "cannot trace: %s", tracer.why().c_str());
        timer.tracer = &tracer;
        r.drop_graphs();  // captured again under tracing, as a profiler started with the program would see it
        if (stamps) stamps->restart();
        {  // the same launches one by one inside their stage ranges, each range synchronized before it closes
            r.timer = &timer;
            r.stamps = nullptr;
            tracer.sync_ranges(true);
            timer.push_range("LABEL");
            r.decode_step(true, s.sampling);
            timer.pop_range();
            tracer.sync_ranges(false);
            // One-by-one launches: the later steps' kernels are placed by launch order, without the API records
            // that would slow every launch (graph replays cost one record a step: kept).
            if (!graph) tracer.api_records(false);
            if (graph) r.timer = nullptr;
            r.stamps = stamps.get();
        }
        timer.push_range("WARMUP");  // the graph's capture, and a step before the first measured one
        for (int i = 0; i < run_warmup; i++) step();
        timer.pop_range();
        TraceRun run;
        run.steps = a.steps;
        run.warmup = run_warmup;
        run.graph = graph;
        run.untraced_step_ms = step_ms;
        run.traced_step_ms = measure();
        run.quiet = a.quiet;
        CUDA_CHECK(cudaDeviceSynchronize());
        tracer.stop();
        timer.tracer = nullptr;
        StampData sd;
        if (stamps) sd = stamps->read();
        emit_trace(tracer, stamps ? &sd : nullptr, run);
    }
    finish(0);
    return 0;
}
