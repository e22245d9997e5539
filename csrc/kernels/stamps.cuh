// In-kernel stage timestamps (off by default): a kernel that takes a StageStamps parameter marks where each
// of its stages starts and ends in every block with the GPU's %globaltimer (ns). The profile executable's
// trace (--trace) turns them into tracks inside the kernel's box; with buf == nullptr a stamp is one
// predictable branch and nothing is written.
// Layout of buf: [slot][block][stage][2] (start, end) as unsigned 64-bit ns; a launch gets its own slot
// (host side: StampRecorder in csrc/engine/trace.h), stages are numbered 0 .. kMaxStages-1 in kernel order.
#pragma once
#include <cstdint>

namespace gd {

constexpr int kMaxStages = 8;

struct StageStamps {
    unsigned long long* buf = nullptr;  // nullptr: off
    int slot = 0;                       // this launch's slot
    int max_blocks = 0;                 // blocks per slot (launches with more blocks record the first ones)
};

__device__ __forceinline__ unsigned long long globaltimer_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

// Thread 0 of the block records edge 0 (start) or 1 (end) of `stage`. Call it where every thread passes (a
// barrier before an end stamp makes it the block's end, not thread 0's).
__device__ __forceinline__ void stamp(const StageStamps& s, int stage, int edge) {
    if (s.buf == nullptr || threadIdx.x != 0 || (int)blockIdx.x >= s.max_blocks) return;
    s.buf[(((size_t)s.slot * s.max_blocks + blockIdx.x) * kMaxStages + stage) * 2 + edge] = globaltimer_ns();
}

}  // namespace gd
