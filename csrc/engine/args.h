// The common command line of the five executables (docs/protocol.md), with gpt2_optim's short flags.
#pragma once
#include <string>
#include <vector>

namespace gd {

enum class Program { Naive, KVOnly, Optimized, Validate, Profile };
const char* program_name(Program p);

// The tricks of the optimized variant, each switched off by --no-<name> (docs/protocol.md) for ablations.
struct Ablations {
    bool graph = true, gemv = true, fused = true, split_attn = true, pdl = true;
};

struct Args {
    Program program = Program::KVOnly;
    std::string checkpoint, tokenizer, prompt_file, dump_logits;
    std::vector<int> prompt_ids;
    int prompt_len = 0;  // synthetic prompt length, 0 = not asked
    int batch = 1, gen = 64, sampling = 1, top_k = 0, warmup = -1, repeat = 1, dump_stride = 1, device = 0;
    float temperature = 1.0f, top_p = 1.0f;
    unsigned long long seed = 1337;
    bool quiet = false;
    // optimized's speed tricks (all on); optimized, validate and profile take --no-<name> for each
    Ablations on;
    bool short_links = false;        // experimental: the v2 decode step (--short-links; docs/perf-notes.md)
    bool one_layer_weights = false;  // diagnostic
    // validate
    std::vector<std::string> variants{"kvonly", "optimized"};
    float max_abs = -1, max_rmse = -1, min_match = -1;  // < 0: precision default
    // profile
    std::string variant = "optimized";
    int steps = 16;
    bool builtin = false;
    bool trace = false;   // kernel timeline through CUPTI (engine/trace.h)
    bool stamps = false;  // with trace: in-kernel stage timestamps (kernels/stamps.cuh)
};

// Parses argv; prints usage and exits 0 on --help, fails with EXIT_USAGE on bad input.
Args parse_args(Program program, int argc, char** argv);

}  // namespace gd
