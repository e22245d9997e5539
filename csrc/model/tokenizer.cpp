#include "tokenizer.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../common/check.h"

namespace gd {

std::string Tokenizer::decode(int id) const {
    if (id < 0 || id >= (int)tokens.size()) return "<" + std::to_string(id) + ">";
    return tokens[id];
}

Tokenizer load_tokenizer(const std::string& path) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) GD_FAIL(EXIT_INPUT, "cannot open tokenizer '%s': %s", path.c_str(), strerror(errno));
    std::vector<uint8_t> data;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    fclose(f);
    if (data.size() < 1024)
        GD_FAIL(EXIT_INPUT, "tokenizer '%s' is truncated: %zu bytes, the header alone is 1024", path.c_str(),
                data.size());
    int32_t hdr[256];
    memcpy(hdr, data.data(), sizeof hdr);
    if (hdr[0] != kTokenizerMagic)
        GD_FAIL(EXIT_INPUT, "tokenizer '%s' has bad magic %d (expected %d)", path.c_str(), hdr[0], kTokenizerMagic);
    Tokenizer t;
    t.version = hdr[1];
    if (t.version != 1 && t.version != 2)
        GD_FAIL(EXIT_INPUT, "tokenizer '%s' has version %d (supported: 1, 2)", path.c_str(), t.version);
    int vocab = hdr[2];
    if (vocab <= 0 || vocab > (1 << 24))
        GD_FAIL(EXIT_INPUT, "tokenizer '%s': vocab_size %d out of range", path.c_str(), vocab);
    if (t.version == 2) {
        t.eot_id = hdr[3];
        if (t.eot_id < 0 || t.eot_id >= vocab)
            GD_FAIL(EXIT_INPUT, "tokenizer '%s': EOT id %d outside vocab of %d", path.c_str(), t.eot_id, vocab);
    } else {
        t.eot_id = vocab == 50257 ? 50256 : -1;
    }
    size_t pos = 1024;
    t.tokens.reserve(vocab);
    for (int i = 0; i < vocab; i++) {
        if (pos >= data.size())
            GD_FAIL(EXIT_INPUT, "tokenizer '%s' is truncated at token %d of %d", path.c_str(), i, vocab);
        int len = data[pos++];
        if (len == 0) GD_FAIL(EXIT_INPUT, "tokenizer '%s': token %d has length 0", path.c_str(), i);
        if (pos + len > data.size())
            GD_FAIL(EXIT_INPUT, "tokenizer '%s' is truncated inside token %d of %d", path.c_str(), i, vocab);
        t.tokens.emplace_back((const char*)data.data() + pos, len);
        pos += len;
    }
    if (pos != data.size())
        GD_FAIL(EXIT_INPUT, "tokenizer '%s' has %zu trailing bytes after %d tokens", path.c_str(), data.size() - pos,
                vocab);
    return t;
}

std::string printable(const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
        if (c < 32 && c != '\n' && c != '\t') {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", c);
            o += b;
        } else {
            o += (char)c;
        }
    }
    return o;
}

}  // namespace gd
