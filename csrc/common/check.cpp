#include "check.h"

#include <cstdarg>
#include <vector>

namespace gd {

std::string strfmt(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::vector<char> buf(n > 0 ? n + 1 : 1);
    vsnprintf(buf.data(), buf.size(), fmt, ap2);
    va_end(ap2);
    return std::string(buf.data());
}

namespace {
FailReporter g_reporter = nullptr;
}

void set_fail_reporter(FailReporter r) { g_reporter = r; }

void fail(int code, const std::string& msg) {
    fflush(stdout);
    fprintf(stderr, "error: %s\n", msg.c_str());
    if (g_reporter) g_reporter(code, msg);
    fflush(stdout);
    exit(code);
}

}  // namespace gd
