// Error handling shared by every executable: one-line messages, fixed exit codes (docs/protocol.md).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace gd {

enum ExitCode { EXIT_OK = 0, EXIT_VALIDATION = 1, EXIT_USAGE = 2, EXIT_INPUT = 3, EXIT_CUDA = 4 };

// Prints `error: msg` on stderr, then has the failure reporter (the output protocol's error and done records on
// stdout: engine/protocol.cpp installs it) report it, and exits.
[[noreturn]] void fail(int code, const std::string& msg);
using FailReporter = void (*)(int code, const std::string& msg);
void set_fail_reporter(FailReporter r);

// printf-style helper for fail().
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace gd

#define GD_FAIL(code, ...) ::gd::fail((code), ::gd::strfmt(__VA_ARGS__))

#ifdef __CUDACC__
#include <cuda_runtime.h>
#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            GD_FAIL(::gd::EXIT_CUDA, "CUDA error %s (%s) at %s:%d", cudaGetErrorName(err_),        \
                    cudaGetErrorString(err_), __FILE__, __LINE__);                                 \
    } while (0)
// After a kernel launch: catches bad launch configurations at once.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#endif
