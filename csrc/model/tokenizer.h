// llm.c tokenizer files: 256 x int32 header (magic 20240328, version 1 or 2, vocab size, EOT id in v2),
// then per token one length byte and that many bytes. Used only to print generated text.
#pragma once
#include <string>
#include <vector>

namespace gd {

constexpr int kTokenizerMagic = 20240328;

struct Tokenizer {
    std::vector<std::string> tokens;
    int eot_id = -1;  // -1 when unknown
    int version = 0;
    bool loaded() const { return !tokens.empty(); }
    // The token's bytes; out-of-range ids print as <id>.
    std::string decode(int id) const;
};

// Reads and checks the whole file; calls fail(EXIT_INPUT, ...) on any problem.
Tokenizer load_tokenizer(const std::string& path);

// Text safe for a terminal line: control bytes other than newline/tab shown as \xNN.
std::string printable(const std::string& s);

}  // namespace gd
