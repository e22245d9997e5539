// loadcheck: the checkpoint and tokenizer loaders on the host alone (no GPU), for tests and for users who
// want to know whether a file will load. Prints `checkpoint`, `load` and `tokenizer` result lines; the
// `checkpoint` line says whether the engine runs the model's shape (`runnable`, `engine`: why not).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../common/check.h"
#include "../engine/protocol.h"
#include "../model/checkpoint.h"
#include "../model/tokenizer.h"

using namespace gd;

static void usage() {
    printf("usage: loadcheck [--checkpoint PATH [--load fp32|fp16|bf16]] [--tokenizer PATH]\n"
           "Checks llm.c checkpoint / tokenizer files with the engine's own loaders, on the host.\n"
           "--load converts all parameters and prints their sum and the first values.\n");
}

int main(int argc, char** argv) {
    std::string ckpt, tok, load;
    for (int i = 1; i < argc; i++) {
        std::string f = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) GD_FAIL(EXIT_USAGE, "%s needs a value", f.c_str());
            return argv[++i];
        };
        if (f == "-h" || f == "--help") {
            usage();
            return 0;
        } else if (f == "--checkpoint" || f == "-e") ckpt = val();
        else if (f == "--tokenizer" || f == "-tk") tok = val();
        else if (f == "--load") load = val();
        else GD_FAIL(EXIT_USAGE, "unknown option '%s' (see --help)", f.c_str());
    }
    if (ckpt.empty() && tok.empty()) GD_FAIL(EXIT_USAGE, "give --checkpoint and/or --tokenizer");
    int vocab = -1;
    if (!ckpt.empty()) {
        CheckpointHeader h = read_checkpoint_header(ckpt);
        const ModelConfig& c = h.cfg;
        vocab = c.vocab_size;
        Record("checkpoint")
            .num("version", h.version)
            .str("dtype", dtype_name(h.file_dtype))
            .num("maxT", c.max_seq_len)
            .num("V", c.vocab_size)
            .num("L", c.num_layers)
            .num("NH", c.num_heads)
            .num("C", c.channels)
            .num("Vp", c.padded_vocab)
            .num("params", (int64_t)param_total(c))
            .num("file_bytes", (int64_t)h.file_bytes)
            .num("runnable", engine_shape_problem(c).empty() ? 1 : 0)
            .str("engine", engine_shape_problem(c).empty() ? "runs it" : engine_shape_problem(c))
            .emit();
        if (!load.empty()) {
            DType t = load == "fp32" ? DType::F32 : load == "fp16" ? DType::F16 : load == "bf16" ? DType::BF16 : DType::F32;
            if (load != "fp32" && load != "fp16" && load != "bf16")
                GD_FAIL(EXIT_USAGE, "--load must be fp32, fp16 or bf16, got '%s'", load.c_str());
            std::vector<uint8_t> data;
            load_checkpoint(ckpt, t, data);
            size_t n = data.size() / dtype_bytes(t);
            std::vector<uint32_t> first;
            double sum = 0;
            for (size_t i = 0; i < n; i++) {
                uint32_t bits;
                float v;
                if (t == DType::F32) {
                    memcpy(&v, data.data() + 4 * i, 4);
                    memcpy(&bits, &v, 4);
                } else {
                    uint16_t h16;
                    memcpy(&h16, data.data() + 2 * i, 2);
                    bits = h16;
                    v = t == DType::BF16 ? bf16_to_f32(h16) : 0.f;  // fp16: bits only
                }
                sum += v;
                if (i < 8) first.push_back(bits);
            }
            std::vector<int> firsti(first.begin(), first.end());
            Record("load").str("dtype", load).num("n", (int64_t)n).num("sum", sum).ids("first_bits", firsti.data(),
                                                                                     (int)firsti.size()).emit();
        }
    }
    if (!tok.empty()) {
        require_regular_file(tok, "tokenizer");  // before the loader opens it: a FIFO would block there
        Tokenizer t = load_tokenizer(tok);
        if (vocab > 0 && (int)t.tokens.size() != vocab)
            GD_FAIL(EXIT_INPUT, "tokenizer '%s' has %zu tokens but the checkpoint's vocab_size is %d", tok.c_str(),
                    t.tokens.size(), vocab);
        Record("tokenizer").num("version", t.version).num("vocab", (int)t.tokens.size()).num("eot", t.eot_id).emit();
    }
    Record("done").num("status", 0).emit();
    return 0;
}
