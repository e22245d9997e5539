// The kernel timeline of `profile --trace` (docs/protocol.md, "Trace records"), without Nsight Systems.
// Tracer: CUPTI's activity API, loaded at run time (dlopen; never linked, so the executables run where it is
// absent), records every kernel's GPU start and end (kernels inside a CUDA graph too: they share the graph
// launch's correlation id and carry their graph node id) and the runtime and driver API calls with their CPU
// times; the NVTX ranges the StageTimer pushes are timed here on CUPTI's clock, the clock of every record.
// emit_trace() ties kernels to launch calls, launch calls to ranges, and prints the trace records; kernels
// without their launch call are placed by what else is recorded (a synchronized range's times, the order of
// correlation ids).
// StampRecorder: the host side of the in-kernel stage stamps (kernels/stamps.cuh): one buffer slot per stamped
// launch, read back after the steps and aligned to the kernels' CUPTI times.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../kernels/stamps.cuh"

namespace gd {

struct TraceKernel {
    uint64_t start = 0, end = 0, node = 0;  // node: graph node id, 0 outside a graph
    uint32_t stream = 0, corr = 0, graph = 0;
    int grid[3] = {0, 0, 0}, block[3] = {0, 0, 0};
    std::string name;  // mangled, as CUPTI gives it
};
struct TraceApi {  // one runtime or driver API call (every one CUPTI delivered, launch or not)
    uint64_t start = 0, end = 0;
    uint32_t corr = 0, thread = 0, cbid = 0;
    bool runtime = true;        // runtime API (else driver API, or a driver launch outside any API call)
    bool internal = false;      // CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API (cbid unused)
    bool launch = false;        // a kernel or graph launch call by its callback id (or internal)
    bool graph_launch = false;  // cudaGraphLaunch / cuGraphLaunch
};
struct TraceRange {  // an NVTX push/pop range, CPU times
    std::string name;
    int parent = -1, depth = 0;
    uint64_t start = 0, end = 0;  // end 0: still open
    bool synced = false;          // the device was synchronized before it closed: its kernels ran inside it
};
struct ApiSeen {  // what CUPTI delivered besides kernels: the diagnostic of the `trace` record
    uint64_t runtime = 0, driver = 0, internal = 0, other = 0;  // records per kind (other: any other kind)
    std::string mode;    // "kinds" (the RUNTIME and DRIVER activity kinds) or "cbids" (per callback id); "-label"
                         // appended: only in the LABEL step (api_records(false) after it)
    std::string enable;  // "ok", or the calls CUPTI refused
};

class Tracer {
public:
    Tracer() = default;
    ~Tracer();
    Tracer(const Tracer&) = delete;
    Tracer& operator=(const Tracer&) = delete;
    // Finds and opens libcupti: $GPT2D_CUPTI (a file: only that one) or the toolkit ($CUDA_HOME, the build's
    // CUDA_HOME: lib64/, lib/, extras/CUPTI/lib64/), then $GPT2D_CUPTI_DIR (the driver sets it to the
    // nvidia-cuda-cupti wheel's folder), then the plain soname. False with why() when it cannot trace.
    bool load();
    // Records from now on (kernels, API calls, ranges); false with why() when CUPTI refuses kernel records. API
    // records: the RUNTIME and DRIVER activity kinds, every call (GPT2D_CUPTI_API=cbids: only the launch calls'
    // callback ids, the way this tracer first asked, which delivered none with CUPTI 13.0.1 on the H200).
    bool start();
    void stop();   // delivers every record (synchronize the device first) and stops recording
    // While recording: API records off (kernels only) or on again. Steps launched one by one (no CUDA graph) pay
    // for every API record on the CPU (kvonly at B = 1 on the H200: +54 % per step with ~650 records a step), so
    // profile asks for them in the LABEL step only and places the later kernels by their launch order
    // (GPT2D_CUPTI_API=all keeps them on: seen.mode says which).
    void api_records(bool on);
    bool active() const { return active_; }
    uint64_t now() const;  // CUPTI's clock, ns
    void range_push(const char* name);  // while active: an NVTX range opens / closes (CPU time)
    void range_pop();
    // Ranges pushed while on synchronize the device before they close, so that every kernel launched in one
    // runs inside its CPU times (the LABEL step: what places its kernels when CUPTI gives no launch calls).
    void sync_ranges(bool on) { sync_ = on; }
    const std::string& why() const { return why_; }
    const std::string& library() const { return lib_; }
    unsigned version() const { return version_; }

    std::vector<TraceKernel> kernels;
    std::vector<TraceApi> apis;
    std::vector<TraceRange> ranges;
    uint64_t dropped = 0;  // records CUPTI could not store
    ApiSeen seen;

private:
    bool fail(const std::string& why);
    void* lib_handle_ = nullptr;
    std::string why_, lib_;
    unsigned version_ = 0;
    bool active_ = false, sync_ = false, api_on_ = false;
    int open_ = -1;  // innermost open range
};

struct StampSlot {  // one stamped launch
    std::string kernel, label;
    std::vector<std::string> stages;
};
struct StampData {  // what the stamped launches of the last step wrote
    std::vector<StampSlot> slots;
    std::vector<unsigned long long> raw;  // [slot][block][kMaxStages][2] ns of %globaltimer (start, end)
    int max_blocks = 0, missed = 0;      // missed: launches that found no free slot (not stamped)
};

class StampRecorder {
public:
    // Room for max_slots stamped launches of up to max_blocks blocks each (zeroed device buffer).
    StampRecorder(int max_slots, int max_blocks);
    ~StampRecorder();
    StampRecorder(const StampRecorder&) = delete;
    StampRecorder& operator=(const StampRecorder&) = delete;
    // The stamps of one launch: `kernel` is a part of the kernel's name (it finds the launch among the step's
    // kernels: the n-th slot of a name is the n-th kernel of the step with that name), `label` what the launch
    // is (e.g. "qkv"), `stages` the stage names in kernel order, comma-separated. Off (buf nullptr) once the
    // slots are used up.
    StageStamps take(const char* kernel, const char* label, const char* stages);
    // The next launches take the slots from the first again: a step launches the same kernels as the last
    // one, so the buffer ends up holding the last step's stamps.
    void restart() { used_ = 0; }
    StampData read() const;  // the slots of the last step (synchronizes)

private:
    unsigned long long* buf_ = nullptr;
    int max_slots_, max_blocks_, used_ = 0, missed_ = 0;
    std::vector<StampSlot> slots_;
};

// What emit_trace needs to know about the run.
struct TraceRun {
    int steps = 0;                 // measured (traced) steps: the MEASURE ranges after start()
    int warmup = 0;                // traced steps between LABEL and the first measured one
    bool graph = false;            // the measured steps replay a CUDA graph
    double untraced_step_ms = 0;   // the same steps before tracing started (CUDA events)
    double traced_step_ms = 0;     // the traced steps (CUDA events)
    bool quiet = false;
};

// The trace records (docs/protocol.md) of what was recorded (stamps: nullptr without --stamps), and the
// self-checks as text unless quiet.
void emit_trace(const Tracer& t, const StampData* stamps, const TraceRun& run);

}  // namespace gd
