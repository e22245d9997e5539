// llm.c checkpoint files: a 256 x int32 header, then 16 parameter tensors (fp32 or bf16).
// Host-only code (no CUDA), so the loader's checks also build and run on a machine without a GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gd {

constexpr int kCheckpointMagic = 20240326;
constexpr int kNumParamTensors = 16;

struct ModelConfig {
    int max_seq_len = 0;   // maxT
    int vocab_size = 0;    // V
    int num_layers = 0;    // L
    int num_heads = 0;     // NH
    int channels = 0;      // C
    int padded_vocab = 0;  // Vp
};

enum class DType { F32, F16, BF16 };
const char* dtype_name(DType t);
size_t dtype_bytes(DType t);

// Element counts of the 16 tensors in file order (wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
// ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb).
void param_counts(const ModelConfig& c, size_t counts[kNumParamTensors]);
size_t param_total(const ModelConfig& c);
extern const char* const kParamNames[kNumParamTensors];

// The header's limits (docs/protocol.md, "Checkpoint header limits"; gpt2driver/files/checkpoint.py
// holds the same): a field outside them makes the file unreadable. The head sizes the engine runs.
constexpr int kMaxSeqLen = 1 << 20;
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxLayers = 4096;
constexpr int kMaxHeads = 4096;
constexpr int kMaxChannels = 1 << 16;
constexpr int kEngineHeadSizes[3] = {32, 64, 128};

// Why the engine cannot run a model of this (readable) shape, or "" when it can.
std::string engine_shape_problem(const ModelConfig& c);

// fail(EXIT_INPUT, ...) unless `path` names a regular file (a directory, a FIFO or a device gets one line at
// once, before anything opens it). `what`: "checkpoint", "tokenizer".
void require_regular_file(const std::string& path, const char* what);

struct CheckpointHeader {
    ModelConfig cfg;
    int version = 0;           // 3 = fp32 tensors, 5 = bf16 tensors
    DType file_dtype = DType::F32;
    uint64_t file_bytes = 0;
};

// Reads and checks the header against the file's length. Calls fail(EXIT_INPUT, ...) on any problem.
CheckpointHeader read_checkpoint_header(const std::string& path);

// Reads all parameters, converted to `target` (round to nearest even), into `out` (bytes).
CheckpointHeader load_checkpoint(const std::string& path, DType target, std::vector<uint8_t>& out);

// Scalar conversions used by the loader (exposed for tests).
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace gd
