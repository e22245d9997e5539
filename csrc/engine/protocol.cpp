#include "protocol.h"

#include <cstdio>

#include "../common/check.h"

namespace gd {

namespace {
// fail() (common/check.cpp) reports through this: every program links this file, so each one's failures end
// with the error and done records.
void report_failure(int code, const std::string& msg) {
    Record("error").str("msg", msg).emit();
    Record("done").num("status", code).emit();
}
const bool kReporterSet = (set_fail_reporter(report_failure), true);
}  // namespace

Record::Record(const char* name) {
    line_ = "##GPT2D " + std::to_string(kProtocolVersion) + " " + name;
}

Record& Record::num(const char* key, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, " %s=%.6g", key, v);
    line_ += buf;
    return *this;
}

Record& Record::num(const char* key, int64_t v) {
    line_ += " " + std::string(key) + "=" + std::to_string(v);
    return *this;
}

Record& Record::str(const char* key, const std::string& v) {
    bool bare = !v.empty();
    for (char c : v)
        if (c == ' ' || c == '"' || c == '\\' || c == '=' || c == '\t' || c == '\n') bare = false;
    line_ += " " + std::string(key) + "=";
    if (bare) {
        line_ += v;
        return *this;
    }
    line_ += '"';
    for (char c : v) {
        if (c == '"' || c == '\\') line_ += '\\';
        line_ += (c == '\n' || c == '\t') ? ' ' : c;
    }
    line_ += '"';
    return *this;
}

Record& Record::ids(const char* key, const int* v, int n) {
    line_ += " " + std::string(key) + "=";
    for (int i = 0; i < n; i++) {
        if (i) line_ += ',';
        line_ += std::to_string(v[i]);
    }
    if (n == 0) line_ += "\"\"";
    return *this;
}

void Record::emit() {
    fputs(line_.c_str(), stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

}  // namespace gd
