#include "args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "../common/check.h"
#include "../common/precision.h"
#include "protocol.h"

namespace gd {

const char* program_name(Program p) {
    switch (p) {
        case Program::Naive: return "naive";
        case Program::KVOnly: return "kvonly";
        case Program::Optimized: return "optimized";
        case Program::Validate: return "validate";
        case Program::Profile: return "profile";
    }
    return "?";
}

namespace {

const char* kCommonUsage =
    "  -e,  --checkpoint PATH   llm.c checkpoint (version 3 = fp32, 5 = bf16)            [required]\n"
    "  -tk, --tokenizer PATH    llm.c tokenizer, to print the generated text\n"
    "  -b,  --batch N           rows generated together                               [1]\n"
    "  -g,  --gen N             new tokens per row                                    [64]\n"
    "  -m,  --sampling 0|1      0 = random sampling, 1 = argmax                       [1]\n"
    "       --greedy            same as -m 1\n"
    "       --temperature F     sampling temperature (> 0)                            [1.0]\n"
    "       --top-k K           keep the K most likely tokens, 0 = off                [0]\n"
    "       --top-p P           nucleus mass in (0, 1], 1 = off                       [1.0]\n"
    "  -s,  --seed N            seed for sampling and synthetic prompts               [1337]\n"
    "       --prompt-ids LIST   prompt token ids, comma or space separated\n"
    "       --prompt-file PATH  file of prompt ids\n"
    "       --prompt-len N      synthetic prompt of N ids per row (EOT, then ids from seed and row)\n"
    "                           (default prompt: one EOT token)\n"
    "       --warmup N          untimed generations before the timed ones             [1]\n"
    "       --repeat N          timed generations; the median is reported             [1]\n"
    "       --dump-logits PATH  write each step's logits (format: docs/protocol.md)\n"
    "       --dump-stride S     dump every S-th step only                             [1]\n"
    "       --device N          CUDA device                                           [0]\n"
    "  -q,  --quiet             result lines only\n"
    "  -h,  --help              this text;  --version: protocol and build\n";

// optimized's speed tricks: --no-<name> switches one off (Ablations).
struct Switch {
    const char* name;
    using Field = bool Ablations::*;
    Field field;
    const char* help;
};
const Switch kSwitches[] = {
    {"graph", &Ablations::graph, "no CUDA graph for the decode step"},
    {"gemv", &Ablations::gemv, "cuBLAS instead of the small-batch decode kernels"},
    {"fused", &Ablations::fused, "separate LayerNorm / bias / GELU / residual / KV-store / argmax kernels"},
    {"split-attn", &Ablations::split_attn, "one warp per query for decode attention"},
    {"pdl", &Ablations::pdl, "no programmatic dependent launch (sm_90)"},
};

void usage(Program p) {
    printf("usage: %s -e CHECKPOINT [options]\n\n", program_name(p));
    switch (p) {
        case Program::Naive:
            printf("Generates with no KV cache: every step recomputes the whole sequence (the baseline).\n\n");
            break;
        case Program::KVOnly:
            printf("Prefills the prompt once, then decodes one token a step over a KV cache (plain kernels).\n\n");
            break;
        case Program::Optimized:
            printf("KV-cache decoding with every speed trick (CUDA graph, fused epilogues, small-batch GEMV,\n"
                   "split attention). Each can be switched off for ablations.\n\n");
            break;
        case Program::Validate:
            printf("Teacher-forced check: naive chooses the tokens (greedy), the cached variants are fed the\n"
                   "same tokens; per step it compares their logits with naive's. Exit 1 when a tolerance fails.\n\n");
            break;
        case Program::Profile:
            printf("Prefills the prompt, runs warm-up decode steps, then measured decode steps inside NVTX\n"
                   "ranges (MEASURE@decode, layer<i>, ...) for nsys/ncu; --builtin times each stage itself.\n\n");
            break;
    }
    printf("%s", kCommonUsage);
    if (p == Program::Optimized || p == Program::Validate || p == Program::Profile) {
        printf("%s", p == Program::Optimized ? "" : "  optimized's switches (for ablations; validate and profile apply them to optimized):\n");
        for (const Switch& sw : kSwitches) printf("       --no-%-14s %s\n", sw.name, sw.help);
        printf("       --short-links       experimental: the v2 decode step of short links (16-bit builds, B <= 16;\n"
               "                           slower than the default on the H200, docs/perf-notes.md)\n"
               "       --one-layer-weights diagnostic: every layer reads layer 0's weights, which then stay in\n"
               "                           L2 (the outputs are not the model's): the step without streaming\n"
               "                           the layers' weights from DRAM\n");
    }
    if (p == Program::Validate)
        printf("       --variants LIST     cached variants to check                  [kvonly,optimized]\n"
               "       --max-abs F         max |logit difference| allowed           [by precision]\n"
               "       --max-rmse F        max RMSE of a step's logits allowed      [by precision]\n"
               "       --min-match F       min fraction of argmax agreement         [by precision]\n");
    if (p == Program::Profile)
        printf("       --variant NAME      kvonly or optimized                       [optimized]\n"
               "       --steps N           measured decode steps                     [16]\n"
               "       --builtin           time each stage with CUDA events\n"
               "       --trace             kernel timeline of the measured steps through CUPTI (trace records;\n"
               "                           the steps run untraced first, for their step time)\n"
               "       --stamps            with --trace: in-kernel stage timestamps of the decode kernels\n"
               "       (--warmup counts warm-up decode steps here, default 8)\n");
    printf("\nResult lines and exit codes: docs/protocol.md. Build: %s.\n", GD_PRECISION_NAME);
}

long parse_long(const char* flag, const char* s, long lo, long hi) {
    char* end = nullptr;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        GD_FAIL(EXIT_USAGE, "%s expects an integer, got '%s'", flag, s);
    if (v < lo || v > hi) GD_FAIL(EXIT_USAGE, "%s must be in %ld..%ld, got %ld", flag, lo, hi, v);
    return v;
}

float parse_float(const char* flag, const char* s) {
    char* end = nullptr;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) GD_FAIL(EXIT_USAGE, "%s expects a number, got '%s'", flag, s);
    return v;
}

std::vector<int> parse_id_list(const char* what, const std::string& text) {
    std::vector<int> ids;
    std::string tok;
    std::stringstream ss(text);
    auto flush = [&]() {
        if (tok.empty()) return;
        ids.push_back((int)parse_long(what, tok.c_str(), 0, 0x7fffffff));
        tok.clear();
    };
    for (char c : text) {
        if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r')
            flush();
        else
            tok += c;
    }
    flush();
    if (ids.empty()) GD_FAIL(EXIT_USAGE, "%s: no token ids given", what);
    return ids;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == ',') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

// --no-<name> of kSwitches: clears that trick; false for any other flag.
bool parse_switch(const std::string& flag, Ablations& on) {
    for (const Switch& sw : kSwitches)
        if (flag == std::string("--no-") + sw.name) {
            on.*sw.field = false;
            return true;
        }
    return false;
}

}  // namespace

Args parse_args(Program program, int argc, char** argv) {
    Args a;
    a.program = program;
    const bool switches = program == Program::Optimized || program == Program::Validate || program == Program::Profile;
    for (int i = 1; i < argc; i++) {
        std::string f = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) GD_FAIL(EXIT_USAGE, "%s needs a value (see --help)", f.c_str());
            return argv[++i];
        };
        if (f == "-h" || f == "--help") {
            usage(program);
            exit(0);
        } else if (f == "--version") {
            printf("gpt2driver %s protocol=%d precision=%s\n", program_name(program), kProtocolVersion,
                   GD_PRECISION_NAME);
            exit(0);
        } else if (f == "-e" || f == "--checkpoint") a.checkpoint = val();
        else if (f == "-tk" || f == "--tokenizer") a.tokenizer = val();
        else if (f == "-b" || f == "--batch") a.batch = (int)parse_long("--batch", val(), 1, 1 << 16);
        else if (f == "-g" || f == "--gen") a.gen = (int)parse_long("--gen", val(), 1, 1 << 20);
        else if (f == "-m" || f == "--sampling") a.sampling = (int)parse_long("--sampling", val(), 0, 1);
        else if (f == "--greedy") a.sampling = 1;
        else if (f == "--temperature") a.temperature = parse_float("--temperature", val());
        else if (f == "--top-k") a.top_k = (int)parse_long("--top-k", val(), 0, 1 << 24);
        else if (f == "--top-p") a.top_p = parse_float("--top-p", val());
        else if (f == "-s" || f == "--seed") a.seed = (unsigned long long)parse_long("--seed", val(), 0, 0x7fffffffffffffffL);
        else if (f == "--prompt-ids") a.prompt_ids = parse_id_list("--prompt-ids", val());
        else if (f == "--prompt-file") a.prompt_file = val();
        else if (f == "--prompt-len") a.prompt_len = (int)parse_long("--prompt-len", val(), 1, 1 << 20);
        else if (f == "--warmup") a.warmup = (int)parse_long("--warmup", val(), 0, 1000000);
        else if (f == "--repeat") a.repeat = (int)parse_long("--repeat", val(), 1, 1000000);
        else if (f == "--dump-logits") a.dump_logits = val();
        else if (f == "--dump-stride") a.dump_stride = (int)parse_long("--dump-stride", val(), 1, 1 << 20);
        else if (f == "--device") a.device = (int)parse_long("--device", val(), 0, 1024);
        else if (f == "-q" || f == "--quiet") a.quiet = true;
        else if (switches && parse_switch(f, a.on)) {
        } else if (switches && f == "--short-links") a.short_links = true;
        else if (switches && f == "--one-layer-weights") a.one_layer_weights = true;
        else if (program == Program::Validate && f == "--variants") a.variants = split_commas(val());
        else if (program == Program::Validate && f == "--max-abs") a.max_abs = parse_float("--max-abs", val());
        else if (program == Program::Validate && f == "--max-rmse") a.max_rmse = parse_float("--max-rmse", val());
        else if (program == Program::Validate && f == "--min-match") a.min_match = parse_float("--min-match", val());
        else if (program == Program::Profile && f == "--variant") a.variant = val();
        else if (program == Program::Profile && f == "--steps") a.steps = (int)parse_long("--steps", val(), 1, 1 << 20);
        else if (program == Program::Profile && f == "--builtin") a.builtin = true;
        else if (program == Program::Profile && f == "--trace") a.trace = true;
        else if (program == Program::Profile && f == "--stamps") a.stamps = true;
        else GD_FAIL(EXIT_USAGE, "unknown option '%s' for %s (see --help)", f.c_str(), program_name(program));
    }
    if (a.checkpoint.empty()) GD_FAIL(EXIT_USAGE, "no checkpoint given: use -e PATH (see --help)");
    int prompt_sources = !a.prompt_ids.empty() + !a.prompt_file.empty() + (a.prompt_len > 0);
    if (prompt_sources > 1) GD_FAIL(EXIT_USAGE, "give only one of --prompt-ids, --prompt-file, --prompt-len");
    if (!a.prompt_file.empty()) {
        std::ifstream in(a.prompt_file);
        if (!in) GD_FAIL(EXIT_INPUT, "cannot open prompt file '%s': %s", a.prompt_file.c_str(), strerror(errno));
        std::stringstream ss;
        ss << in.rdbuf();
        a.prompt_ids = parse_id_list("--prompt-file", ss.str());
    }
    if (!(a.temperature > 0.0f)) GD_FAIL(EXIT_USAGE, "--temperature must be > 0, got %g", a.temperature);
    if (!(a.top_p > 0.0f && a.top_p <= 1.0f)) GD_FAIL(EXIT_USAGE, "--top-p must be in (0, 1], got %g", a.top_p);
    if (a.warmup < 0) a.warmup = program == Program::Profile ? 8 : 1;
    if (program == Program::Validate) {
        if (a.variants.empty()) GD_FAIL(EXIT_USAGE, "--variants is empty");
        for (auto& v : a.variants)
            if (v != "kvonly" && v != "optimized")
                GD_FAIL(EXIT_USAGE, "--variants: unknown variant '%s' (allowed: kvonly, optimized)", v.c_str());
    }
    if (a.stamps && !a.trace) GD_FAIL(EXIT_USAGE, "--stamps needs --trace (the stamps are shown on its timeline)");
    if (a.trace && a.builtin)
        GD_FAIL(EXIT_USAGE, "--trace and --builtin do not combine (the stage timer's events would be on the timeline)");
    if (program == Program::Profile && a.variant != "kvonly" && a.variant != "optimized")
        GD_FAIL(EXIT_USAGE, "--variant must be kvonly or optimized, got '%s'", a.variant.c_str());
    return a;
}

}  // namespace gd
