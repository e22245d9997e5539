#include "launch.cuh"

#include <map>
#include <tuple>

namespace gd {

int device_attribute(cudaDeviceAttr attr) {
    static std::map<int, int> known;  // attribute -> value (an executable uses one device)
    auto it = known.find((int)attr);
    if (it != known.end()) return it->second;
    int dev = 0, v = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
    return known[(int)attr] = v;
}

bool has_mma16816() { return device_attribute(cudaDevAttrComputeCapabilityMajor) >= 8; }

bool has_pdl() { return device_attribute(cudaDevAttrComputeCapabilityMajor) >= 9; }

int resident_blocks(const void* kernel, int threads, size_t smem) {
    static std::map<std::tuple<const void*, int, size_t>, int> known;
    auto key = std::make_tuple(kernel, threads, smem);
    auto it = known.find(key);
    if (it != known.end()) return it->second;
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    return known[key] = device_attribute(cudaDevAttrMultiProcessorCount) * (per_sm > 0 ? per_sm : 1);
}

}  // namespace gd
