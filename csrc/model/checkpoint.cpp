#include "checkpoint.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include <sys/stat.h>

#include "../common/check.h"

namespace gd {

const char* const kParamNames[kNumParamTensors] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"};

const char* dtype_name(DType t) {
    return t == DType::F32 ? "fp32" : t == DType::F16 ? "fp16" : "bf16";
}
size_t dtype_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

void param_counts(const ModelConfig& c, size_t n[kNumParamTensors]) {
    size_t C = c.channels, L = c.num_layers;
    n[0] = (size_t)c.padded_vocab * C;
    n[1] = (size_t)c.max_seq_len * C;
    n[2] = L * C;
    n[3] = L * C;
    n[4] = L * 3 * C * C;
    n[5] = L * 3 * C;
    n[6] = L * C * C;
    n[7] = L * C;
    n[8] = L * C;
    n[9] = L * C;
    n[10] = L * 4 * C * C;
    n[11] = L * 4 * C;
    n[12] = L * C * 4 * C;
    n[13] = L * C;
    n[14] = C;
    n[15] = C;
}

size_t param_total(const ModelConfig& c) {
    size_t n[kNumParamTensors], t = 0;
    param_counts(c, n);
    for (size_t x : n) t += x;
    return t;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;      // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00u;     // overflow (>= 65520 rounds to inf) or inf
    if (a < 0x38800000u) {                           // subnormal or zero in fp16
        float af;
        memcpy(&af, &a, 4);
        // value / 2^-24, rounded to nearest even
        float q = af * 16777216.0f;
        return sign | (uint16_t)std::nearbyint(q);
    }
    uint32_t mant = a & 0x7fffffu;
    int exp = (int)(a >> 23) - 127 + 15;
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // carries into the exponent correctly
    return sign | (uint16_t)h;
}

void require_regular_file(const std::string& path, const char* what) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
        GD_FAIL(EXIT_INPUT, "cannot open %s '%s': %s", what, path.c_str(), strerror(errno));
    if (!S_ISREG(st.st_mode)) {
        const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                           : (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? "a device"
                                                                          : "not a file";
        GD_FAIL(EXIT_INPUT, "%s '%s' is not a regular file (%s)", what, path.c_str(), kind);
    }
}

std::string engine_shape_problem(const ModelConfig& c) {
    int hs = c.num_heads > 0 ? c.channels / c.num_heads : 0;
    for (int ok : kEngineHeadSizes)
        if (hs == ok) return "";
    return strfmt("head size %d (channels %d / num_heads %d) is not one the engine runs (32, 64 or 128)", hs,
                  c.channels, c.num_heads);
}

namespace {

struct FileCloser {
    void operator()(FILE* f) const { if (f) fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

FilePtr open_or_fail(const std::string& path, const char* what) {
    require_regular_file(path, what);
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) GD_FAIL(EXIT_INPUT, "cannot open %s '%s': %s", what, path.c_str(), strerror(errno));
    return FilePtr(f);
}

uint64_t file_length(FILE* f) {
    fseeko(f, 0, SEEK_END);
    uint64_t n = (uint64_t)ftello(f);
    fseeko(f, 0, SEEK_SET);
    return n;
}

}  // namespace

CheckpointHeader read_checkpoint_header(const std::string& path) {
    FilePtr f = open_or_fail(path, "checkpoint");
    CheckpointHeader h;
    h.file_bytes = file_length(f.get());
    int32_t hdr[256];
    if (h.file_bytes < sizeof hdr || fread(hdr, sizeof hdr, 1, f.get()) != 1)
        GD_FAIL(EXIT_INPUT, "checkpoint '%s' is truncated: %llu bytes, the header alone is 1024", path.c_str(),
                (unsigned long long)h.file_bytes);
    if (hdr[0] != kCheckpointMagic)
        GD_FAIL(EXIT_INPUT, "checkpoint '%s' has bad magic %d (expected %d): not an llm.c model file", path.c_str(),
                hdr[0], kCheckpointMagic);
    h.version = hdr[1];
    if (h.version != 3 && h.version != 5)
        GD_FAIL(EXIT_INPUT, "checkpoint '%s' has version %d (supported: 3 = fp32, 5 = bf16)", path.c_str(), h.version);
    h.file_dtype = h.version == 3 ? DType::F32 : DType::BF16;
    ModelConfig& c = h.cfg;
    c.max_seq_len = hdr[2];
    c.vocab_size = hdr[3];
    c.num_layers = hdr[4];
    c.num_heads = hdr[5];
    c.channels = hdr[6];
    c.padded_vocab = hdr[7];
    const int fields[6] = {c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.padded_vocab};
    const char* names[6] = {"max_seq_len", "vocab_size", "num_layers", "num_heads", "channels", "padded_vocab_size"};
    const int limits[6] = {kMaxSeqLen, kMaxVocab, kMaxLayers, kMaxHeads, kMaxChannels, kMaxVocab};
    for (int i = 0; i < 6; i++)
        if (fields[i] <= 0 || fields[i] > limits[i])
            GD_FAIL(EXIT_INPUT, "checkpoint '%s': header field %s = %d is out of range (1..%d)", path.c_str(), names[i],
                    fields[i], limits[i]);
    if (c.channels % c.num_heads != 0)
        GD_FAIL(EXIT_INPUT, "checkpoint '%s': channels %d is not a multiple of num_heads %d", path.c_str(), c.channels,
                c.num_heads);
    if (c.padded_vocab < c.vocab_size)
        GD_FAIL(EXIT_INPUT, "checkpoint '%s': padded_vocab_size %d < vocab_size %d", path.c_str(), c.padded_vocab,
                c.vocab_size);
    uint64_t expect = 1024 + (uint64_t)param_total(c) * dtype_bytes(h.file_dtype);
    if (h.file_bytes != expect)
        GD_FAIL(EXIT_INPUT,
                "checkpoint '%s' is %llu bytes but its header (L=%d NH=%d C=%d Vp=%d maxT=%d, %s) needs %llu: %s",
                path.c_str(), (unsigned long long)h.file_bytes, c.num_layers, c.num_heads, c.channels, c.padded_vocab,
                c.max_seq_len, dtype_name(h.file_dtype), (unsigned long long)expect,
                h.file_bytes < expect ? "truncated file" : "trailing bytes or wrong header");
    return h;
}

CheckpointHeader load_checkpoint(const std::string& path, DType target, std::vector<uint8_t>& out) {
    CheckpointHeader h = read_checkpoint_header(path);
    FilePtr f = open_or_fail(path, "checkpoint");
    fseeko(f.get(), 1024, SEEK_SET);
    size_t n = param_total(h.cfg);
    size_t in_bytes = dtype_bytes(h.file_dtype), out_bytes = dtype_bytes(target);
    out.resize(n * out_bytes);
    const size_t chunk = 1 << 20;
    std::vector<uint8_t> buf(chunk * in_bytes);
    for (size_t done = 0; done < n;) {
        size_t m = n - done < chunk ? n - done : chunk;
        if (fread(buf.data(), in_bytes, m, f.get()) != m)
            GD_FAIL(EXIT_INPUT, "checkpoint '%s': read failed at parameter %zu of %zu", path.c_str(), done, n);
        uint8_t* dst = out.data() + done * out_bytes;
        if (h.file_dtype == target) {
            memcpy(dst, buf.data(), m * in_bytes);
        } else {
            for (size_t i = 0; i < m; i++) {
                float v;
                if (h.file_dtype == DType::F32)
                    memcpy(&v, buf.data() + 4 * i, 4);
                else {
                    uint16_t b;
                    memcpy(&b, buf.data() + 2 * i, 2);
                    v = bf16_to_f32(b);
                }
                if (target == DType::F32) {
                    memcpy(dst + 4 * i, &v, 4);
                } else {
                    uint16_t o = target == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
                    memcpy(dst + 2 * i, &o, 2);
                }
            }
        }
        done += m;
    }
    return h;
}

}  // namespace gd
