#include "launch.cuh"

#include <map>
#include <tuple>

namespace gd {

static bool g_pdl_enabled = true;

void set_pdl_enabled(bool on) { g_pdl_enabled = on; }

bool pdl_available() {
    static int sm90 = -1;  // -1 = not asked yet
    if (sm90 < 0) {
        int dev = 0, major = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        sm90 = major >= 9;
    }
    return g_pdl_enabled && sm90;
}

int sm_count() {
    static int v = 0;
    if (v == 0) {
        int dev = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    }
    return v;
}

int resident_blocks(const void* kernel, int threads, size_t smem) {
    static std::map<std::tuple<const void*, int, size_t>, int> known;
    auto key = std::make_tuple(kernel, threads, smem);
    auto it = known.find(key);
    if (it != known.end()) return it->second;
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    return known[key] = sm_count() * (per_sm > 0 ? per_sm : 1);
}

}  // namespace gd
