// The model's weights on the device, and the device allocations of the engine: each fails with one line that
// names what the memory was for and how many MiB were needed and free.
#pragma once
#include <cstddef>
#include <string>

#include "../common/precision.h"
#include "../model/checkpoint.h"

namespace gd {

struct Weights {
    floatX *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb,
        *lnfw, *lnfb;
    void* base = nullptr;
    size_t bytes = 0;
};
// Loads the checkpoint, converts to the build's precision and uploads it.
Weights load_weights(const std::string& path, ModelConfig* cfg);

// Device allocation with a clear error naming what it was for and the MiB needed.
void* device_alloc(size_t bytes, const char* what);

// Fails with EXIT_CUDA naming the MiB needed and free when `bytes` do not fit.
void check_fits(size_t bytes, const char* what);

}  // namespace gd
