// Machine-readable result lines: `##GPT2D 1 <record> key=value ...` (docs/protocol.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gd {

constexpr int kProtocolVersion = 1;

class Record {
public:
    explicit Record(const char* name);
    Record& num(const char* key, double v);   // %.6g
    Record& num(const char* key, int64_t v);  // exact integer
    Record& num(const char* key, int v) { return num(key, (int64_t)v); }
    Record& num(const char* key, uint64_t v) { return num(key, (int64_t)v); }
    Record& str(const char* key, const std::string& v);  // quoted when needed
    Record& ids(const char* key, const int* v, int n);   // comma-separated
    void emit();  // writes the line to stdout

private:
    std::string line_;
};

}  // namespace gd
