// What every executable does before and after the model runs: parse the command line, open the device,
// load and check the model, tokenizer and prompt, allocate the shared token buffer, print result lines.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "../model/tokenizer.h"
#include "args.h"
#include "gpt2.h"

namespace gd {

struct Session {
    Args args;
    ModelConfig cfg;
    Weights weights;
    Tokenizer tokenizer;
    std::vector<int> prompt;                 // row 0's prompt; every row has the same length
    std::vector<std::vector<int>> prompts;   // one per row (synthetic prompts differ per row)
    int* d_tokens = nullptr;  // [B][maxT]
    cudaStream_t stream = nullptr;
    cudaDeviceProp prop{};
    size_t free_before = 0;
    SamplingParams sampling;
};

// Everything up to a loaded model and an uploaded prompt; fails with a one-line error on bad input.
void open_session(Session& s, Program program, int argc, char** argv);
void print_config(const Session& s, const std::string& variant);
void print_memory(const Session& s, size_t act_bytes, size_t kv_bytes);
// Writes the prompt into every row of the token buffer.
void upload_prompt(Session& s);
// Human text (unless quiet) and the `tokens` records of every row, from the device token buffer.
void print_tokens(const Session& s, int gen);
void finish(int status);  // the `done` record

// --dump-logits writer (format in docs/protocol.md).
class LogitsDump {
public:
    LogitsDump(const std::string& path, int B, int V, int Vp, int prompt_len, int stride);
    ~LogitsDump();
    bool wants(int step, int last_step) const { return step % stride_ == 0 || step == last_step; }
    void write(int step, const float* d_logits, cudaStream_t s);  // synchronizes
private:
    FILE* f_;
    std::string path_;
    int B_, V_, Vp_, P_, stride_, records_ = 0;
    std::vector<float> host_;
};

struct GenTiming {
    float total_ms = 0, prefill_ms = 0, decode_ms = 0;
};
// One whole generation of s.args.gen tokens with the runner's variant (timed with CUDA events).
GenTiming generate(Session& s, Runner& r, LogitsDump* dump);

}  // namespace gd
