// Launch helpers shared by the decode kernels.
// Programmatic dependent launch (sm_90+): a kernel launched with launch_pdl(true, ...) may start while the previous
// kernel in the stream finishes; it must call pdl_wait() in every block before it reads anything that
// kernel wrote (and before it can exit). Older GPUs launch normally and pdl_wait() is a no-op.
// Device attributes, asked once: device_attribute(). Grids sized for the GPU: resident_blocks().
#pragma once
#include <cuda_runtime.h>

#include "../common/check.h"

namespace gd {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next PDL-launched kernel be scheduled as soon as SMs free up.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Small batches (early_trigger_for): a decode kernel lets the next one start as soon as all its own blocks
// run, before its wait, so the next kernel's weight loads are in flight one kernel earlier; otherwise after
// its wait (at B = 16 the early blocks' registers cost more than they gain, docs/perf-notes.md v1.7).
__device__ __forceinline__ void pdl_trigger_early(bool early) {
    if (early) pdl_launch_dependents();
}
__device__ __forceinline__ void pdl_trigger_late(bool early) {
    if (!early) pdl_launch_dependents();
}
__host__ __device__ __forceinline__ bool early_trigger_for(int rows) { return rows <= 8; }

bool has_mma16816();   // mma.m16n8k16 with 16-bit inputs: sm_80 and newer
bool has_pdl();        // programmatic dependent launch: sm_90 and newer

// pdl: the variant's switch (Variant::pdl); on GPUs without PDL the launch is a plain one.
template <typename... KArgs, typename... Args>
void launch_pdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl && has_pdl() ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

int device_attribute(cudaDeviceAttr attr);  // of the current device, asked once per attribute (one device)
// Blocks of `kernel` (threads per block, dynamic shared memory) that fit on the whole GPU at once; asked once
// per (kernel, threads, smem).
int resident_blocks(const void* kernel, int threads, size_t smem);

}  // namespace gd
