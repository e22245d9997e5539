#include "pdl.cuh"

namespace gd {

static int g_pdl = -1;  // -1 = not decided yet
static bool g_pdl_enabled = true;

void set_pdl_enabled(bool on) { g_pdl_enabled = on; }

bool pdl_available() {
    if (g_pdl < 0) {
        int dev = 0, major = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        g_pdl = major >= 9;
    }
    return g_pdl && g_pdl_enabled;
}

}  // namespace gd
