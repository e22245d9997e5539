#include "session.h"

#include <cerrno>
#include <cstring>

#include "../common/check.h"
#include "protocol.h"

namespace gd {

void open_session(Session& s, Program program, int argc, char** argv) {
    s.args = parse_args(program, argc, argv);
    const Args& a = s.args;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0)
        GD_FAIL(EXIT_CUDA, "no CUDA device available (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (a.device >= ndev) GD_FAIL(EXIT_USAGE, "--device %d: only %d CUDA device(s)", a.device, ndev);
    CUDA_CHECK(cudaSetDevice(a.device));
    CUDA_CHECK(cudaGetDeviceProperties(&s.prop, a.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    matmul_init(a.device);
    size_t total = 0;
    CUDA_CHECK(cudaMemGetInfo(&s.free_before, &total));

    // Check the header before reading gigabytes, so size errors come first.
    CheckpointHeader h = read_checkpoint_header(a.checkpoint);
    const ModelConfig& c = h.cfg;
    if (!a.tokenizer.empty()) {
        s.tokenizer = load_tokenizer(a.tokenizer);
        if ((int)s.tokenizer.tokens.size() != c.vocab_size)
            GD_FAIL(EXIT_INPUT, "tokenizer '%s' has %zu tokens but the model's vocab_size is %d", a.tokenizer.c_str(),
                    s.tokenizer.tokens.size(), c.vocab_size);
    }
    int eot = s.tokenizer.eot_id >= 0 ? s.tokenizer.eot_id : (c.vocab_size > 50256 ? 50256 : c.vocab_size - 1);
    // Synthetic prompts differ per row (EOT, then ids from (seed, row)), so batched runs cannot hide a
    // row mixed up with another; given ids are the same for every row.
    for (int b = 0; b < a.batch; b++) {
        std::vector<int> p;
        if (!a.prompt_ids.empty()) {
            p = a.prompt_ids;
        } else if (a.prompt_len > 0) {
            p.push_back(eot);
            unsigned long long x = (a.seed + 0x9E3779B97F4A7C15ull * (b + 1)) * 6364136223846793005ull;
            while ((int)p.size() < a.prompt_len) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                p.push_back((int)((x >> 33) % (unsigned long long)c.vocab_size));
            }
        } else {
            p.push_back(eot);
        }
        s.prompts.push_back(p);
    }
    s.prompt = s.prompts[0];
    for (size_t i = 0; i < s.prompt.size(); i++)
        if (s.prompt[i] < 0 || s.prompt[i] >= c.vocab_size)
            GD_FAIL(EXIT_USAGE, "prompt token %zu is %d, outside the vocabulary 0..%d", i, s.prompt[i],
                    c.vocab_size - 1);
    long need = (long)s.prompt.size() + a.gen;
    if (need > c.max_seq_len)
        GD_FAIL(EXIT_USAGE, "prompt (%zu tokens) + --gen %d = %ld exceeds the model's max_seq_len %d",
                s.prompt.size(), a.gen, need, c.max_seq_len);

    s.weights = load_weights(a.checkpoint, &s.cfg);
    s.d_tokens = (int*)device_alloc((size_t)a.batch * c.max_seq_len * sizeof(int), "the token buffer");
    CUDA_CHECK(cudaMemset(s.d_tokens, 0, (size_t)a.batch * c.max_seq_len * sizeof(int)));
    upload_prompt(s);
    s.sampling.greedy = a.sampling;
    s.sampling.temperature = a.temperature;
    s.sampling.top_k = a.top_k;
    s.sampling.top_p = a.top_p;
    s.sampling.seed = a.seed;
}

void upload_prompt(Session& s) {
    for (int b = 0; b < s.args.batch; b++)
        CUDA_CHECK(cudaMemcpy(s.d_tokens + (size_t)b * s.cfg.max_seq_len, s.prompts[b].data(),
                              s.prompts[b].size() * sizeof(int), cudaMemcpyHostToDevice));
}

void print_config(const Session& s, const std::string& variant) {
    const Args& a = s.args;
    const ModelConfig& c = s.cfg;
    Record("config")
        .str("program", program_name(a.program))
        .str("variant", variant)
        .str("precision", GD_PRECISION_NAME)
        .num("B", a.batch)
        .num("prompt_len", (int)s.prompt.size())
        .num("gen", a.gen)
        .num("L", c.num_layers)
        .num("NH", c.num_heads)
        .num("C", c.channels)
        .num("V", c.vocab_size)
        .num("Vp", c.padded_vocab)
        .num("maxT", c.max_seq_len)
        .str("device", s.prop.name)
        .num("cc", s.prop.major * 10 + s.prop.minor)
        .str("sampling", a.sampling ? "greedy" : "random")
        .num("temperature", (double)a.temperature)
        .num("top_k", a.top_k)
        .num("top_p", (double)a.top_p)
        .num("seed", (int64_t)a.seed)
        .str("checkpoint", a.checkpoint)
        .emit();
    if (!a.quiet)
        printf("%s: GPT-2 L=%d NH=%d C=%d V=%d on %s (sm_%d%d), %s, B=%d, prompt %zu tokens, %d new\n",
               program_name(a.program), c.num_layers, c.num_heads, c.channels, c.vocab_size, s.prop.name,
               s.prop.major, s.prop.minor, GD_PRECISION_NAME, a.batch, s.prompt.size(), a.gen);
}

void print_memory(const Session& s, size_t act_bytes, size_t kv_bytes) {
    size_t free_now = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_now, &total));
    size_t tokens = (size_t)s.args.batch * s.cfg.max_seq_len * sizeof(int);
    Record("memory")
        .num("weights_bytes", (int64_t)s.weights.bytes)
        .num("kv_bytes", (int64_t)kv_bytes)
        .num("act_bytes", (int64_t)(act_bytes + tokens))
        .num("total_bytes", (int64_t)(s.weights.bytes + kv_bytes + act_bytes + tokens))
        .num("device_used_bytes", (int64_t)(s.free_before - free_now))
        .emit();
}

void print_tokens(const Session& s, int gen) {
    const int P = (int)s.prompt.size(), maxT = s.cfg.max_seq_len;
    std::vector<int> row(maxT);
    for (int b = 0; b < s.args.batch; b++) {
        CUDA_CHECK(cudaMemcpy(row.data(), s.d_tokens + (size_t)b * maxT, (P + gen) * sizeof(int),
                              cudaMemcpyDeviceToHost));
        Record("tokens").num("row", b).ids("prompt", row.data(), P).ids("ids", row.data() + P, gen).emit();
        if (s.args.quiet) continue;
        printf("--- row %d:", b);
        if (s.tokenizer.loaded()) {
            std::string text;
            for (int i = 0; i < P + gen; i++) text += s.tokenizer.decode(row[i]);
            printf("\n%s\n", printable(text).c_str());
        } else {
            for (int i = P; i < P + gen; i++) printf(" %d", row[i]);
            printf("\n");
        }
    }
}

void finish(int status) {
    Record("done").num("status", status).emit();
}

LogitsDump::LogitsDump(const std::string& path, int B, int V, int Vp, int prompt_len, int stride)
    : path_(path), B_(B), V_(V), Vp_(Vp), P_(prompt_len), stride_(stride), host_((size_t)B * V) {
    f_ = fopen(path.c_str(), "wb");
    if (!f_) GD_FAIL(EXIT_INPUT, "cannot write logits dump '%s': %s", path.c_str(), strerror(errno));
    int32_t hdr[16] = {20241121, 1, B, V, 0, prompt_len, stride, 0};
    if (fwrite(hdr, sizeof hdr, 1, f_) != 1) GD_FAIL(EXIT_INPUT, "write failed on '%s'", path.c_str());
}

LogitsDump::~LogitsDump() {
    if (!f_) return;
    fseek(f_, 4 * 4, SEEK_SET);
    fwrite(&records_, sizeof records_, 1, f_);
    fclose(f_);
}

void LogitsDump::write(int step, const float* d_logits, cudaStream_t s) {
    CUDA_CHECK(cudaMemcpy2DAsync(host_.data(), V_ * sizeof(float), d_logits, Vp_ * sizeof(float), V_ * sizeof(float),
                                 B_, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    int32_t rec[2] = {step, P_ - 1 + step};
    if (fwrite(rec, sizeof rec, 1, f_) != 1 || fwrite(host_.data(), sizeof(float), host_.size(), f_) != host_.size())
        GD_FAIL(EXIT_INPUT, "write failed on '%s' (disk full?)", path_.c_str());
    records_++;
}

GenTiming generate(Session& s, Runner& r, LogitsDump* dump) {
    const int P = (int)s.prompt.size(), gen = s.args.gen;
    cudaStream_t st = s.stream;
    cudaEvent_t e0, e1, e2;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaEventCreate(&e2));
    CUDA_CHECK(cudaEventRecord(e0, st));
    for (int step = 0; step < gen; step++) {
        if (!r.variant().use_cache) {  // recompute the whole sequence so far
            r.set_position(0);
            r.forward(P + step);
            r.sample(P + step, s.sampling);
        } else if (step == 0) {  // prefill the prompt
            r.prefill(P, true, s.sampling);
        } else {
            r.decode_step(true, s.sampling);
        }
        if (step == 0) CUDA_CHECK(cudaEventRecord(e1, st));
        if (dump && dump->wants(step, gen - 1)) dump->write(step, r.logits(), st);
    }
    CUDA_CHECK(cudaEventRecord(e2, st));
    CUDA_CHECK(cudaEventSynchronize(e2));
    GenTiming t;
    CUDA_CHECK(cudaEventElapsedTime(&t.total_ms, e0, e2));
    CUDA_CHECK(cudaEventElapsedTime(&t.prefill_ms, e0, e1));
    t.decode_ms = t.total_ms - t.prefill_ms;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaEventDestroy(e2);
    return t;
}

}  // namespace gd
