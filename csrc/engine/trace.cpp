#include "trace.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "../common/check.h"
#include "protocol.h"

// CUPTI's headers give the types only (libcupti is opened at run time). Without them, or older than CUDA 13
// (whose activity records this file reads), the build still succeeds and --trace says why it cannot trace.
#if !defined(GD_NO_CUPTI) && __has_include(<cupti_activity.h>)
#include <cupti_activity.h>
#include <cupti_driver_cbid.h>
#include <cupti_runtime_cbid.h>
#include <cupti_version.h>
#if CUPTI_API_VERSION >= 130000
#define GD_CUPTI 1
#endif
#endif
#ifndef GD_CUPTI
#define GD_CUPTI 0
#endif

#ifndef GD_CUDA_HOME
#define GD_CUDA_HOME "/usr/local/cuda"
#endif

namespace gd {

// ---------------------------------------------------------------------------------------------------------
// StampRecorder

StampRecorder::StampRecorder(int max_slots, int max_blocks) : max_slots_(max_slots), max_blocks_(max_blocks) {
    size_t bytes = (size_t)max_slots * max_blocks * kMaxStages * 2 * sizeof(unsigned long long);
    CUDA_CHECK(cudaMalloc(&buf_, bytes));
    CUDA_CHECK(cudaMemset(buf_, 0, bytes));
}

StampRecorder::~StampRecorder() {
    if (buf_) cudaFree(buf_);
}

StageStamps StampRecorder::take(const char* kernel, const char* label, const char* stages) {
    StageStamps s;
    if (used_ >= max_slots_) {
        missed_++;
        return s;
    }
    StampSlot slot{kernel, label, {}};
    std::string cur;
    for (const char* p = stages;; p++) {
        if (*p == ',' || *p == 0) {
            slot.stages.push_back(cur);
            cur.clear();
            if (*p == 0) break;
        } else {
            cur += *p;
        }
    }
    if (used_ < (int)slots_.size())
        slots_[used_] = slot;
    else
        slots_.push_back(slot);
    s.buf = buf_;
    s.slot = used_++;
    s.max_blocks = max_blocks_;
    return s;
}

StampData StampRecorder::read() const {
    StampData d;
    d.slots.assign(slots_.begin(), slots_.begin() + used_);
    d.raw.resize((size_t)used_ * max_blocks_ * kMaxStages * 2);
    d.max_blocks = max_blocks_;
    d.missed = missed_;
    CUDA_CHECK(cudaDeviceSynchronize());
    if (!d.raw.empty())
        CUDA_CHECK(cudaMemcpy(d.raw.data(), buf_, d.raw.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
    return d;
}

// ---------------------------------------------------------------------------------------------------------
// Tracer: libcupti through dlopen

namespace {

#if GD_CUPTI
struct CuptiApi {
    decltype(&cuptiGetVersion) get_version;
    decltype(&cuptiGetResultString) result_string;
    decltype(&cuptiActivityRegisterCallbacks) register_callbacks;
    decltype(&cuptiActivityEnable) enable;
    decltype(&cuptiActivityDisable) disable;
    decltype(&cuptiActivityEnableRuntimeApi) enable_runtime_api;
    decltype(&cuptiActivityEnableDriverApi) enable_driver_api;
    decltype(&cuptiActivityFlushAll) flush_all;
    decltype(&cuptiActivityGetNextRecord) next_record;
    decltype(&cuptiActivityGetNumDroppedRecords) dropped_records;
    decltype(&cuptiGetTimestamp) timestamp;
};
CuptiApi g_api;
Tracer* g_tracer = nullptr;  // the one tracer that receives the buffers
std::mutex g_mu;             // buffers may complete on CUPTI's thread

// The launch calls by callback id (kernels and graphs; runtime and driver API). A call of another id whose
// correlation id a kernel carries is a launch too (emit_trace): these name the launches whose kernel was lost.
struct LaunchId {
    bool runtime, graph;
    CUpti_CallbackId id;
};
const LaunchId kLaunchIds[] = {
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000},
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_ptsz_v7000},
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_v11060},
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_ptsz_v11060},
    {true, false, CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_v13000},
    {true, false, CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_ptsz_v13000},
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_v9000},
    {true, false, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_ptsz_v9000},
    {true, true, CUPTI_RUNTIME_TRACE_CBID_cudaGraphLaunch_v10000},
    {true, true, CUPTI_RUNTIME_TRACE_CBID_cudaGraphLaunch_ptsz_v10000},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel_ptsz},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel},
    {false, false, CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel_ptsz},
    {false, true, CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch},
    {false, true, CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch_ptsz},
};

const LaunchId* launch_id(bool runtime, CUpti_CallbackId id) {
    for (const LaunchId& l : kLaunchIds)
        if (l.runtime == runtime && l.id == id) return &l;
    return nullptr;
}

std::string result_text(CUptiResult r) {
    const char* s = nullptr;
    if (g_api.result_string && g_api.result_string(r, &s) == CUPTI_SUCCESS && s) return s;
    return "CUPTI error " + std::to_string((int)r);
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *size = (size_t)8 << 20;
    *buffer = static_cast<uint8_t*>(aligned_alloc(8, *size));
    *max_records = 0;
}

void keep_kernel(Tracer* t, const CUpti_ActivityKernel10* k) {
    TraceKernel o;
    o.start = k->start, o.end = k->end, o.node = k->graphNodeId;
    o.stream = k->streamId, o.corr = k->correlationId, o.graph = k->graphId;
    o.grid[0] = k->gridX, o.grid[1] = k->gridY, o.grid[2] = k->gridZ;
    o.block[0] = k->blockX, o.block[1] = k->blockY, o.block[2] = k->blockZ;
    o.name = k->name ? k->name : "?";
    if (o.start == 0 && o.end == 0)
        t->dropped++;  // no timestamps could be collected for it
    else
        t->kernels.push_back(std::move(o));
}

// Every API record is kept (a few per launch): emit_trace picks the launch calls.
void keep_api(Tracer* t, const CUpti_ActivityAPI* a) {
    TraceApi o;
    o.start = a->start, o.end = a->end, o.corr = a->correlationId, o.thread = a->threadId, o.cbid = a->cbid;
    o.runtime = a->kind == CUPTI_ACTIVITY_KIND_RUNTIME;
    o.internal = a->kind == CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API;
    const LaunchId* l = o.internal ? nullptr : launch_id(o.runtime, a->cbid);
    o.launch = o.internal || l;
    o.graph_launch = l && l->graph;
    (o.internal ? t->seen.internal : o.runtime ? t->seen.runtime : t->seen.driver)++;
    t->apis.push_back(o);
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t, size_t valid) {
    std::lock_guard<std::mutex> lock(g_mu);
    Tracer* t = g_tracer;
    CUpti_Activity* rec = nullptr;
    while (t && valid > 0 && g_api.next_record(buffer, valid, &rec) == CUPTI_SUCCESS) {
        switch (rec->kind) {
            case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
            case CUPTI_ACTIVITY_KIND_KERNEL:
                keep_kernel(t, reinterpret_cast<const CUpti_ActivityKernel10*>(rec));
                break;
            case CUPTI_ACTIVITY_KIND_RUNTIME:
            case CUPTI_ACTIVITY_KIND_DRIVER:
            case CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API:
                keep_api(t, reinterpret_cast<const CUpti_ActivityAPI*>(rec));
                break;
            default:
                t->seen.other++;
        }
    }
    size_t dropped = 0;
    if (t && g_api.dropped_records(ctx, stream, &dropped) == CUPTI_SUCCESS) t->dropped += dropped;
    free(buffer);
}

// Folders that may hold libcupti, in search order.
std::vector<std::string> cupti_folders() {
    std::vector<std::string> homes, out;
    if (const char* h = getenv("CUDA_HOME")) homes.push_back(h);
    homes.push_back(GD_CUDA_HOME);
    for (const std::string& h : homes)
        for (const char* sub : {"/lib64", "/lib", "/extras/CUPTI/lib64"}) {
            std::string d = h + sub;
            if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
        }
    if (const char* w = getenv("GPT2D_CUPTI_DIR"))
        if (*w) out.push_back(w);
    return out;
}

// libcupti.so, else its versioned files, in `dir`.
std::vector<std::string> cupti_files(const std::string& dir) {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d))
            if (strncmp(e->d_name, "libcupti.so", 11) == 0) names.push_back(e->d_name);
        closedir(d);
    }
    std::sort(names.begin(), names.end());  // libcupti.so first, then libcupti.so.<N>...
    for (auto& n : names) n = dir + "/" + n;
    return names;
}
#endif  // GD_CUPTI

}  // namespace

Tracer::~Tracer() {
#if GD_CUPTI
    if (active_) stop();
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_tracer == this) g_tracer = nullptr;
#endif
}

bool Tracer::fail(const std::string& why) {
    why_ = why;
    return false;
}

bool Tracer::load() {
#if !GD_CUPTI
#if defined(GD_NO_CUPTI) || !__has_include(<cupti_activity.h>)
    return fail("this build has no CUPTI headers (cupti_activity.h): rebuild with a CUDA toolkit that has CUPTI");
#else
    return fail("this build's CUPTI headers are older than CUDA 13: rebuild with CUDA 13 or newer");
#endif
#else
    if (lib_handle_) return true;
    const unsigned major = CUPTI_API_VERSION / 10000;
    std::vector<std::string> candidates;
    const char* given = getenv("GPT2D_CUPTI");
    if (given && *given) {
        candidates.push_back(given);  // only that one
    } else {
        for (const std::string& d : cupti_folders())
            for (const std::string& f : cupti_files(d)) candidates.push_back(f);
        candidates.push_back("libcupti.so." + std::to_string(major));  // the loader's search path
        candidates.push_back("libcupti.so");
    }
    std::string last;
    for (const std::string& path : candidates) {
        void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* e = dlerror();
            if (given || path.find('/') != std::string::npos) last = e ? e : ("cannot open " + path);
            continue;
        }
        CuptiApi api{};
        bool ok = true;
        auto sym = [&](auto& fn, const char* name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
            if (!fn) ok = false, last = path + " has no " + name;
        };
        sym(api.get_version, "cuptiGetVersion");
        sym(api.result_string, "cuptiGetResultString");
        sym(api.register_callbacks, "cuptiActivityRegisterCallbacks");
        sym(api.enable, "cuptiActivityEnable");
        sym(api.disable, "cuptiActivityDisable");
        sym(api.enable_runtime_api, "cuptiActivityEnableRuntimeApi");
        sym(api.enable_driver_api, "cuptiActivityEnableDriverApi");
        sym(api.flush_all, "cuptiActivityFlushAll");
        sym(api.next_record, "cuptiActivityGetNextRecord");
        sym(api.dropped_records, "cuptiActivityGetNumDroppedRecords");
        sym(api.timestamp, "cuptiGetTimestamp");
        uint32_t v = 0;
        if (ok && (api.get_version(&v) != CUPTI_SUCCESS || v / 10000 != major)) {
            ok = false;
            last = path + " is CUPTI API version " + std::to_string(v) + ", this build reads version " +
                   std::to_string(major) + ".x (CUPTI_API_VERSION " + std::to_string(CUPTI_API_VERSION) + ")";
        }
        if (!ok) {
            dlclose(h);
            continue;
        }
        g_api = api;
        lib_handle_ = h;
        version_ = v;
        char real[4096];
        lib_ = dlinfo(h, RTLD_DI_ORIGIN, real) == 0 && path.find('/') == std::string::npos
                   ? std::string(real) + "/" + path
                   : path;
        return true;
    }
    if (given && *given) return fail("GPT2D_CUPTI: " + last);
    std::string where;
    for (const std::string& d : cupti_folders()) where += (where.empty() ? "" : ", ") + d;
    return fail("no usable libcupti (looked in " + where + " and the loader's path" +
                (last.empty() ? "" : "; " + last) +
                "): install CUPTI (the CUDA toolkit's, or pip install nvidia-cuda-cupti) or set GPT2D_CUPTI to the "
                "library");
#endif
}

bool Tracer::start() {
#if !GD_CUPTI
    return fail(why_.empty() ? "not built with CUPTI" : why_);
#else
    if (!lib_handle_ && !load()) return false;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        g_tracer = this;
    }
    CUptiResult r = g_api.register_callbacks(buffer_requested, buffer_completed);
    if (r == CUPTI_SUCCESS) r = g_api.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (r != CUPTI_SUCCESS) return fail("CUPTI refused kernel tracing: " + result_text(r));
    // API records are what ties a kernel to its range; without them the trace goes on (emit_trace places the
    // kernels by what else it has) and the `trace` record says what CUPTI refused.
    const char* mode = getenv("GPT2D_CUPTI_API");
    seen.mode = mode && !strcmp(mode, "cbids") ? "cbids" : "kinds";
    active_ = true;
    api_records(true);
    return true;
#endif
}

void Tracer::api_records(bool on) {
#if GD_CUPTI
    if (!active_ || on == api_on_) return;
    if (!on) {  // what was recorded so far is kept; GPT2D_CUPTI_API=all: never off
        const char* mode = getenv("GPT2D_CUPTI_API");
        if (mode && !strcmp(mode, "all")) return;
        seen.mode += "-label";
    }
    api_on_ = on;
    std::string refused;
    auto ask = [&](const std::string& what, CUptiResult res) {
        if (res != CUPTI_SUCCESS) refused += (refused.empty() ? "" : "; ") + what + ": " + result_text(res);
    };
    if (seen.mode.compare(0, 5, "cbids") == 0) {
        for (const LaunchId& l : kLaunchIds)
            ask((l.runtime ? "runtime cbid " : "driver cbid ") + std::to_string(l.id),
                l.runtime ? g_api.enable_runtime_api(l.id, on) : g_api.enable_driver_api(l.id, on));
    } else if (on) {
        ask("RUNTIME", g_api.enable(CUPTI_ACTIVITY_KIND_RUNTIME));
        ask("DRIVER", g_api.enable(CUPTI_ACTIVITY_KIND_DRIVER));
    } else {
        g_api.disable(CUPTI_ACTIVITY_KIND_RUNTIME);
        g_api.disable(CUPTI_ACTIVITY_KIND_DRIVER);
    }
    if (on) ask("INTERNAL_LAUNCH_API", g_api.enable(CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API));
    else g_api.disable(CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API);
    if (on) seen.enable = refused.empty() ? "ok" : refused;
#else
    (void)on;
#endif
}

void Tracer::stop() {
#if GD_CUPTI
    if (!active_) return;
    active_ = false;
    g_api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    g_api.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    g_api.disable(CUPTI_ACTIVITY_KIND_RUNTIME);
    g_api.disable(CUPTI_ACTIVITY_KIND_DRIVER);
    g_api.disable(CUPTI_ACTIVITY_KIND_INTERNAL_LAUNCH_API);
    if (api_on_ && seen.mode.compare(0, 5, "cbids") == 0)
        for (const LaunchId& l : kLaunchIds)
            l.runtime ? g_api.enable_runtime_api(l.id, 0) : g_api.enable_driver_api(l.id, 0);
    api_on_ = false;
#endif
}

uint64_t Tracer::now() const {
    uint64_t t = 0;
#if GD_CUPTI
    if (lib_handle_) g_api.timestamp(&t);
#endif
    return t;
}

void Tracer::range_push(const char* name) {
    if (!active_) return;
    TraceRange r;
    r.name = name;
    r.parent = open_;
    r.depth = open_ < 0 ? 0 : ranges[open_].depth + 1;
    r.synced = sync_;
    r.start = now();
    ranges.push_back(r);
    open_ = (int)ranges.size() - 1;
}

void Tracer::range_pop() {
    if (!active_ || open_ < 0) return;
    if (ranges[open_].synced) CUDA_CHECK(cudaDeviceSynchronize());
    ranges[open_].end = now();
    open_ = ranges[open_].parent;
}

// ---------------------------------------------------------------------------------------------------------
// emit_trace: kernels -> launch calls -> ranges -> steps and stages (or, without launch calls, synchronized
// ranges and the order of correlation ids); stamps -> kernels

namespace {

bool is_layer(const std::string& n) {
    return n.size() > 5 && n.compare(0, 5, "layer") == 0 &&
           std::all_of(n.begin() + 5, n.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string triple(const int* v) {
    return std::to_string(v[0]) + "," + std::to_string(v[1]) + "," + std::to_string(v[2]);
}

// How a kernel found its range and step.
enum class Placed {
    None,    // not at all (counted as unassigned)
    Launch,  // its launch call's CPU start, inside the ranges open then
    Synced,  // no launch call: its GPU time inside a synchronized range (LABEL)
    Order,   // no launch call: the measured steps are the last launches, in correlation-id order
};

struct KernelInfo {
    int k = -1;             // index into Tracer::kernels
    int step = -1;          // measured step, -1: none (LABEL, warm-up, unknown launch)
    bool label = false;     // launched in the LABEL step
    int range = -1;         // innermost range of its launch
    Placed how = Placed::None;
    std::string stage, layer;
};

// Union length of [start, end) intervals.
uint64_t union_length(std::vector<std::pair<uint64_t, uint64_t>> iv) {
    std::sort(iv.begin(), iv.end());
    uint64_t total = 0, cs = 0, ce = 0;
    bool open = false;
    for (auto& [s, e] : iv) {
        if (!open || s > ce) {
            if (open) total += ce - cs;
            cs = s, ce = e, open = true;
        } else {
            ce = std::max(ce, e);
        }
    }
    if (open) total += ce - cs;
    return total;
}

// The ranges as a forest: each range's top-level range; measured steps are the top-level MEASURE ranges in order.
struct RangeTree {
    const std::vector<TraceRange>& R;
    std::vector<int> top, step_of, measure;  // measure[s]: the MEASURE range of step s
    int label = -1;                          // the LABEL range
    explicit RangeTree(const std::vector<TraceRange>& ranges) : R(ranges), top(ranges.size()), step_of(ranges.size(), -1) {
        for (size_t i = 0; i < R.size(); i++) {
            top[i] = R[i].parent < 0 ? (int)i : top[R[i].parent];
            if (R[i].parent < 0 && R[i].name == "MEASURE") step_of[i] = (int)measure.size(), measure.push_back((int)i);
            if (R[i].parent < 0 && R[i].name == "LABEL") label = (int)i;
        }
    }
    int steps() const { return (int)measure.size(); }
    int step(int r) const { return r < 0 ? -1 : step_of[top[r]]; }
    // Innermost range open at CPU time `ts` (ranges are in push order, which is start order); -1: none.
    int innermost(uint64_t ts) const {
        int lo = 0, hi = (int)R.size();  // first range starting after ts
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (R[mid].start <= ts) lo = mid + 1; else hi = mid;
        }
        for (int r = lo - 1; r >= 0; r = R[r].parent)
            if (R[r].end == 0 || R[r].end >= ts) return r;
        return -1;
    }
};

// The launch calls among the API records: a call whose callback id is a launch, or whose correlation id a kernel
// carries (the kernels of a graph replay share their launch's). A launch call inside another of the same thread
// (the runtime's own driver call) is the same launch: `inner`.
struct Launches {
    std::unordered_map<uint32_t, int> of_corr;  // a kernel's correlation id -> the API call that has it
    std::vector<bool> is, graph, inner;         // per API record
    int total = 0, by_corr = 0;                 // launch calls; of them, launches only by a kernel's correlation id
    std::string by_corr_ids;                    // their callback ids (r: runtime, d: driver)
};

std::string api_key(const TraceApi& a) {
    return (a.internal ? "i" : a.runtime ? "r" : "d") + std::to_string(a.cbid);
}

Launches find_launches(const Tracer& t) {
    const auto& A = t.apis;
    std::unordered_map<uint32_t, bool> kernel_corr;  // correlation id -> a graph kernel has it
    for (const TraceKernel& k : t.kernels) kernel_corr[k.corr] = kernel_corr[k.corr] || k.graph != 0;
    Launches L;
    L.is.assign(A.size(), false), L.graph.assign(A.size(), false), L.inner.assign(A.size(), false);
    std::vector<int> order;
    for (size_t i = 0; i < A.size(); i++) {
        auto it = kernel_corr.find(A[i].corr);
        const bool has = it != kernel_corr.end();
        L.is[i] = A[i].launch || has;
        L.graph[i] = A[i].graph_launch || (has && it->second);
        if (has) L.of_corr[A[i].corr] = (int)i;
        if (has && !A[i].launch) {
            const std::string key = api_key(A[i]);
            if (("," + L.by_corr_ids + ",").find("," + key + ",") == std::string::npos)
                L.by_corr_ids += (L.by_corr_ids.empty() ? "" : ",") + key;
            L.by_corr++;
        }
        if (L.is[i]) order.push_back((int)i), L.total++;
    }
    std::sort(order.begin(), order.end(), [&](int a, int b) {
        const TraceApi &x = A[a], &y = A[b];
        return x.thread != y.thread ? x.thread < y.thread : x.start != y.start ? x.start < y.start : x.end > y.end;
    });
    for (size_t j = 0, outer = 0; j < order.size(); j++) {
        const TraceApi& a = A[order[j]];
        const TraceApi& o = A[order[outer]];
        if (j > 0 && o.thread == a.thread && a.end <= o.end) L.inner[order[j]] = true;
        else outer = j;
    }
    return L;
}

// The API records CUPTI delivered, most frequent callback ids first: "r211x1300,d307x1300,..." (at most `n`).
std::string api_top(const std::vector<TraceApi>& A, size_t n) {
    std::unordered_map<std::string, int> count;
    for (const TraceApi& a : A) count[api_key(a)]++;
    std::vector<std::pair<std::string, int>> v(count.begin(), count.end());
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
    std::string out;
    for (size_t i = 0; i < v.size() && i < n; i++)
        out += (out.empty() ? "" : ",") + v[i].first + "x" + std::to_string(v[i].second);
    return out;
}

// Kernels without a launch call and outside any synchronized range, when no kernel of a measured step has its
// launch call: the program's traced steps are LABEL, run.warmup steps, then the measured ones, so the measured
// steps are the last launches. Correlation ids grow with the API calls: a graph replay's kernels share its id,
// one-by-one launches are taken LABEL's kernel count at a time.
struct Order {
    std::string how = "none";  // graph-order, label-order, none
    int found = 0, expected = 0;  // graph replays (graph-order) or kernels (label-order) after LABEL
    int mismatch = 0;             // steps whose kernel names differ from LABEL's, in order
    int conflicts = 0;            // kernels that start before their step's MEASURE range began on the CPU
};

Order place_by_order(const std::vector<TraceKernel>& K, std::vector<KernelInfo>& info, const RangeTree& rt, int label_count,
                     int warmup) {
    Order o;
    const int nsteps = rt.steps();
    for (const KernelInfo& ki : info)
        if (ki.how == Placed::Launch && ki.step >= 0) return o;
    std::map<uint32_t, std::vector<int>> graphs;  // by correlation id: in launch order
    std::vector<int> plain;
    for (const KernelInfo& ki : info)
        if (ki.how == Placed::None) (K[ki.k].graph ? graphs[K[ki.k].corr].push_back(ki.k) : plain.push_back(ki.k));
    auto place = [&](int k, int s) {
        info[k].how = Placed::Order;
        info[k].step = s;
        info[k].range = s >= 0 ? rt.measure[s] : -1;
    };
    if (!graphs.empty() && nsteps) {
        o.how = "graph-order";
        o.found = (int)graphs.size(), o.expected = warmup + nsteps;
        if (o.found < nsteps) return o;
        int g = 0;
        for (const auto& launch : graphs) {
            for (int k : launch.second) place(k, g - (o.found - nsteps));
            g++;
        }
    } else if (!plain.empty() && nsteps && label_count > 0) {
        o.how = "label-order";
        std::sort(plain.begin(), plain.end(), [&](int a, int b) { return K[a].corr < K[b].corr; });
        o.found = (int)plain.size(), o.expected = (warmup + nsteps) * label_count;
        const int first = o.found - nsteps * label_count;
        if (first < 0) return o;
        for (int j = 0; j < o.found; j++) place(plain[j], j < first ? -1 : (j - first) / label_count);
    }
    return o;
}

}  // namespace

void emit_trace(const Tracer& t, const StampData* sd, const TraceRun& run) {
    const auto& R = t.ranges;
    const auto& K = t.kernels;
    const int nr = (int)R.size();
    const RangeTree rt(R);
    const int nsteps = rt.steps();
    const Launches L = find_launches(t);
    std::vector<int> launched(nsteps, 0);
    std::vector<bool> graph_step(nsteps, false);
    int label_launches = 0;
    for (size_t i = 0; i < t.apis.size(); i++) {
        if (!L.is[i] || L.inner[i]) continue;
        const int r = rt.innermost(t.apis[i].start);
        if (r < 0) continue;
        const int s = rt.step(r);
        if (L.graph[i]) {
            if (s >= 0) graph_step[s] = true;
        } else {
            if (s >= 0) launched[s]++;
            if (rt.top[r] == rt.label) label_launches++;
        }
    }
    // Each kernel: its launch call's range, else the synchronized range its GPU time falls in; its step, stage and
    // layer.
    std::vector<KernelInfo> info(K.size());
    for (size_t i = 0; i < K.size(); i++) {
        KernelInfo& ki = info[i];
        ki.k = (int)i;
        auto it = L.of_corr.find(K[i].corr);
        if (it != L.of_corr.end()) {
            ki.how = Placed::Launch;
            ki.range = rt.innermost(t.apis[it->second].start);
        } else {
            const uint64_t mid = K[i].end > K[i].start ? K[i].start + (K[i].end - K[i].start) / 2 : K[i].start;
            const int r = rt.innermost(mid);
            if (r >= 0 && R[r].synced) ki.how = Placed::Synced, ki.range = r;
        }
        if (ki.range < 0) continue;
        ki.step = rt.step(ki.range);
        ki.label = rt.top[ki.range] == rt.label;
        for (int r = ki.range; r >= 0 && r != rt.top[ki.range]; r = R[r].parent) {
            if (is_layer(R[r].name)) {
                if (ki.layer.empty()) ki.layer = R[r].name;
            } else if (ki.stage.empty()) {
                ki.stage = R[r].name;
            }
        }
    }
    // Kernels per step in GPU order (the launch order of one stream: a kernel starts after the one before it
    // started, PDL or not).
    auto by_start = [&](int a, int b) {
        return K[a].start != K[b].start ? K[a].start < K[b].start : K[a].corr != K[b].corr ? K[a].corr < K[b].corr
                                                                                             : K[a].node < K[b].node;
    };
    std::vector<int> label_seq;
    for (const KernelInfo& ki : info)
        if (ki.label) label_seq.push_back(ki.k);
    std::sort(label_seq.begin(), label_seq.end(), by_start);
    Order order = place_by_order(K, info, rt, (int)label_seq.size(), run.warmup);
    const bool by_order = order.how != "none";
    std::vector<std::vector<int>> steps(nsteps);
    int unassigned = 0, placed_launch = 0, placed_sync = 0, placed_order = 0;
    for (const KernelInfo& ki : info) {
        if (ki.step >= 0) steps[ki.step].push_back(ki.k);
        unassigned += ki.how == Placed::None;
        placed_launch += ki.how == Placed::Launch;
        placed_sync += ki.how == Placed::Synced;
        placed_order += ki.how == Placed::Order;
    }
    for (auto& s : steps) std::sort(s.begin(), s.end(), by_start);
    // Graph replays (and steps placed by order) have no stage ranges: the LABEL step (the same launches one by
    // one) names them, by position when the kernels agree, else by kernel name (a name launched in several stages
    // gets "a/b").
    std::string label_match = "none";
    if ((run.graph || by_order) && !label_seq.empty()) {
        std::unordered_map<std::string, std::pair<std::string, std::string>> by_name;  // name -> stage, layer
        for (int k : label_seq) {
            auto& e = by_name[K[k].name];
            const std::string& st = info[k].stage;
            if (e.first.empty()) e.first = st;
            else if (("/" + e.first + "/").find("/" + st + "/") == std::string::npos) e.first += "/" + st;
            if (e.second != info[k].layer) e.second = e.second.empty() ? info[k].layer : "";
        }
        label_match = "index";
        for (auto& s : steps) {
            bool same = s.size() == label_seq.size();
            for (size_t j = 0; same && j < s.size(); j++) same = K[s[j]].name == K[label_seq[j]].name;
            if (!same) label_match = "names";
            if (!same && by_order) order.mismatch++;
            for (size_t j = 0; j < s.size(); j++) {
                KernelInfo& ki = info[s[j]];
                if (!ki.stage.empty()) continue;
                if (same) {
                    ki.stage = info[label_seq[j]].stage, ki.layer = info[label_seq[j]].layer;
                } else {
                    auto it = by_name.find(K[s[j]].name);
                    if (it != by_name.end()) ki.stage = it->second.first, ki.layer = it->second.second;
                }
            }
        }
    }
    // A kernel cannot start before its launch: one placed by order that starts before its step's MEASURE range
    // began is in the wrong step.
    if (by_order)
        for (int s = 0; s < nsteps; s++)
            for (int k : steps[s]) order.conflicts += K[k].start < R[rt.measure[s]].start;
    // What each step should hold: its launch calls; for a graph replay or a step placed by order, LABEL's (its
    // launch calls, else its kernels).
    const int label_want = label_launches > 0 ? label_launches : (int)label_seq.size();
    const bool any_graph = std::find(graph_step.begin(), graph_step.end(), true) != graph_step.end();
    const std::string launched_from = !(any_graph || by_order) ? "calls"
                                      : label_launches > 0     ? "label_calls"
                                      : label_seq.empty()      ? "none"
                                                               : "label_kernels";
    auto want = [&](int s) { return graph_step[s] || by_order ? label_want : launched[s]; };
    // GPU span of every range: its kernels' first start and last end.
    std::vector<uint64_t> gs(nr, UINT64_MAX), ge(nr, 0);
    std::vector<int> gn(nr, 0);
    for (const KernelInfo& ki : info)
        for (int r = ki.range; r >= 0; r = R[r].parent) {
            gs[r] = std::min(gs[r], K[ki.k].start);
            ge[r] = std::max(ge[r], K[ki.k].end);
            gn[r]++;
        }
    // The timeline's origin: the earliest thing shown. prev_end: the end of the last kernel before the first
    // measured one (the traced warm-up), where the first step's time begins.
    uint64_t first = UINT64_MAX, prev_end = 0, origin = UINT64_MAX;
    if (nsteps && !steps[0].empty()) first = K[steps[0][0]].start;
    for (const TraceKernel& k : K)
        if (k.start < first) prev_end = std::max(prev_end, k.end);
    for (int i = 0; i < nr; i++)
        if (rt.step(i) >= 0) origin = std::min(origin, R[i].start);
    if (first != UINT64_MAX) origin = std::min(origin, first);
    if (prev_end) origin = std::min(origin, prev_end);
    if (origin == UINT64_MAX) origin = 0;
    auto rel = [&](uint64_t v) { return (int64_t)v - (int64_t)origin; };

    // Stamps (the last measured step): slot n of a kernel name is the n-th kernel of the step with that name.
    struct SlotMatch { int kernel = -1, idx = -1; };
    static const StampData none;
    const std::vector<StampSlot>& slots = (sd ? *sd : none).slots;
    const std::vector<unsigned long long>& raw = (sd ? *sd : none).raw;
    std::vector<SlotMatch> match(slots.size());
    std::vector<long long> offsets;
    const int mb = sd ? sd->max_blocks : 0;
    auto at = [&](size_t slot, int b, int st, int edge) {
        return raw[(((size_t)slot * mb + b) * kMaxStages + st) * 2 + edge];
    };
    if (nsteps && !slots.empty()) {
        const std::vector<int>& last = steps[nsteps - 1];
        std::unordered_map<std::string, int> rank;
        for (size_t i = 0; i < slots.size(); i++) {
            int want_rank = rank[slots[i].kernel]++, seen = 0;
            for (size_t j = 0; j < last.size(); j++)
                if (K[last[j]].name.find(slots[i].kernel) != std::string::npos && seen++ == want_rank) {
                    match[i] = {last[j], (int)j};
                    break;
                }
            if (match[i].kernel < 0) continue;
            unsigned long long earliest = 0;
            const int nb = std::min(K[match[i].kernel].grid[0], mb);
            for (int b = 0; b < nb; b++)
                for (int st = 0; st < (int)slots[i].stages.size() && st < kMaxStages; st++) {
                    unsigned long long v = at(i, b, st, 0);
                    if (v && (!earliest || v < earliest)) earliest = v;
                }
            if (earliest) offsets.push_back((long long)K[match[i].kernel].start - (long long)earliest);
        }
    }
    long long offset = 0, spread = 0;
    if (!offsets.empty()) {
        std::vector<long long> o = offsets;
        std::sort(o.begin(), o.end());
        offset = o[o.size() / 2];
        spread = o.back() - o.front();
    }

    // The checks (the driver's table recomputes them from the records).
    int kmin = INT32_MAX, kmax = 0, lmin = INT32_MAX, lmax = 0;
    for (int s = 0; s < nsteps; s++) {
        kmin = std::min(kmin, (int)steps[s].size()), kmax = std::max(kmax, (int)steps[s].size());
        lmin = std::min(lmin, want(s)), lmax = std::max(lmax, want(s));
    }
    if (!nsteps) kmin = lmin = 0;
    uint64_t last_end = 0;
    for (auto& s : steps)
        for (int k : s) last_end = std::max(last_end, K[k].end);
    const double trace_step_us = nsteps && prev_end && last_end > prev_end ? (last_end - prev_end) / 1e3 / nsteps : 0.0;
    const double untraced_us = run.untraced_step_ms * 1e3;
    const double step_dev = untraced_us > 0 ? trace_step_us / untraced_us - 1.0 : 0.0;
    int graph_kernels = 0;
    for (const TraceKernel& k : K) graph_kernels += k.graph != 0;

    Record head("trace");
    head.str("status", "ok")
        .str("lib", t.library())
        .num("cupti", (int64_t)t.version())
        .num("steps", nsteps)
        .num("warmup", run.warmup)
        .num("graph", (int)run.graph)
        .num("stamps", (int)(sd != nullptr))
        .num("kernels", (int64_t)K.size())
        .num("graph_kernels", graph_kernels)
        .num("launch_calls", L.total)
        .num("launch_by_corr", L.by_corr)
        .str("launch_by_corr_ids", L.by_corr_ids)
        .num("dropped", (int64_t)t.dropped)
        .num("no_launch", (int64_t)K.size() - placed_launch)
        .num("placed_launch", placed_launch)
        .num("placed_sync", placed_sync)
        .num("placed_order", placed_order)
        .num("unassigned", unassigned)
        .str("order", order.how)
        .num("order_found", order.found)
        .num("order_expected", order.expected)
        .num("order_mismatch", order.mismatch)
        .num("order_conflicts", order.conflicts)
        .str("launched_from", launched_from)
        .str("api_mode", t.seen.mode)
        .str("api_enable", t.seen.enable)
        .num("api_runtime", (int64_t)t.seen.runtime)
        .num("api_driver", (int64_t)t.seen.driver)
        .num("api_internal", (int64_t)t.seen.internal)
        .num("records_other", (int64_t)t.seen.other)
        .str("api_top", api_top(t.apis, 8))
        .num("origin_ns", (int64_t)origin);
    if (prev_end) head.num("prev_end", rel(prev_end));  // unknown without a kernel before the first step
    head.num("untraced_step_ms", run.untraced_step_ms)
        .num("traced_step_ms", run.traced_step_ms)
        .num("label_kernels", (int64_t)label_seq.size())
        .str("label_match", label_match)
        .num("stamp_offset_ns", (int64_t)offset)
        .num("stamp_spread_ns", (int64_t)spread)
        .num("stamp_missed", sd ? sd->missed : 0);
    head.emit();
    for (int i = 0; i < nr; i++) {
        const int s = rt.step(i);
        if (s < 0) continue;
        Record rec("range");
        rec.num("step", s).str("name", R[i].name).num("depth", R[i].depth).num("start", rel(R[i].start));
        rec.num("end", R[i].end ? rel(R[i].end) : rel(R[i].start)).num("kernels", gn[i]);
        if (gn[i]) rec.num("gpu_start", rel(gs[i])).num("gpu_end", rel(ge[i]));
        if (R[i].parent < 0) rec.num("launched", want(s));
        rec.emit();
    }
    for (int s = 0; s < nsteps; s++)
        for (size_t j = 0; j < steps[s].size(); j++) {
            const TraceKernel& k = K[steps[s][j]];
            const KernelInfo& ki = info[steps[s][j]];
            Record("kernel")
                .num("step", s)
                .num("idx", (int)j)
                .str("name", k.name)
                .num("stream", (int64_t)k.stream)
                .num("start", rel(k.start))
                .num("end", rel(k.end))
                .num("corr", (int64_t)k.corr)
                .num("node", (int64_t)k.node)
                .str("grid", triple(k.grid))
                .str("block", triple(k.block))
                .str("stage", ki.stage)
                .str("layer", ki.layer)
                .emit();
        }
    // Stage stamps: per slot and stage, the blocks' first start, last end, the union of their intervals; per slot
    // `covered_ns`, the union over every block and stage (the time any block was in a stamped stage). Blocks run
    // their stages at once, so the per-stage unions overlap and their sum exceeds the kernel's duration; the
    // stages add up to the kernel when `covered_ns` equals its CUPTI duration (the stamps check, within 5 %).
    double smin = 1e30, smax = 0;
    int stamped = 0, stamps_off = 0, unmatched = 0;  // unmatched: stamped launches without their kernel's stamps
    for (size_t i = 0; i < slots.size(); i++) {
        const StampSlot& sl = slots[i];
        std::string names;
        for (auto& n : sl.stages) names += (names.empty() ? "" : ",") + n;
        const int nb = match[i].kernel >= 0 ? std::min(K[match[i].kernel].grid[0], mb) : 0;
        std::vector<std::pair<uint64_t, uint64_t>> all;
        for (int st = 0; st < (int)sl.stages.size() && st < kMaxStages && nb; st++)
            for (int b = 0; b < nb; b++) {
                unsigned long long a = at(i, b, st, 0), e = at(i, b, st, 1);
                if (a && e >= a) all.push_back({a, e});
            }
        const uint64_t covered = all.empty() ? 0 : union_length(all);
        Record("stampdef")
            .num("slot", (int)i)
            .num("step", nsteps - 1)
            .num("idx", match[i].idx)
            .str("label", sl.label)
            .str("kernel", sl.kernel)
            .str("stages", names)
            .num("blocks", nb)
            .num("covered_ns", (int64_t)covered)
            .emit();
        for (int st = 0; st < (int)sl.stages.size() && st < kMaxStages && nb; st++) {
            std::vector<std::pair<uint64_t, uint64_t>> iv;
            double mean = 0;
            for (int b = 0; b < nb; b++) {
                unsigned long long a = at(i, b, st, 0), e = at(i, b, st, 1);
                if (a && e >= a) iv.push_back({a, e}), mean += (double)(e - a);
            }
            if (iv.empty()) continue;
            uint64_t lo = UINT64_MAX, hi = 0;
            for (auto& [a, e] : iv) lo = std::min(lo, a), hi = std::max(hi, e);
            const uint64_t u = union_length(iv);
            Record("stamp")
                .num("slot", (int)i)
                .num("stage", st)
                .str("name", sl.stages[st])
                .num("start", (int64_t)(lo + offset - origin))
                .num("end", (int64_t)(hi + offset - origin))
                .num("union_ns", (int64_t)u)
                .num("mean_ns", mean / iv.size())
                .num("blocks", (int)iv.size())
                .emit();
        }
        if (nb && covered) {
            const TraceKernel& k = K[match[i].kernel];
            const double ratio = (double)covered / (double)(k.end - k.start);
            smin = std::min(smin, ratio), smax = std::max(smax, ratio);
            stamped++;
            stamps_off += std::abs(ratio - 1.0) > 0.05;
        } else {
            unmatched++;
        }
    }
    const int missed = sd ? sd->missed : 0;
    const bool order_ok = !by_order || (order.found == order.expected && !order.mismatch && !order.conflicts);
    const bool kernels_ok = nsteps > 0 && kmin > 0 && kmin == kmax && lmin == lmax && kmin == lmin && unassigned == 0 && order_ok;
    const bool stamps_ok = stamped > 0 && stamps_off == 0 && unmatched == 0 && missed == 0;
    Record("tracecheck")
        .num("steps", nsteps)
        .num("kernels_min", kmin)
        .num("kernels_max", kmax)
        .num("launched_min", lmin)
        .num("launched_max", lmax)
        .num("kernels_ok", (int)kernels_ok)
        .num("step_us", trace_step_us)
        .num("untraced_step_us", untraced_us)
        .num("step_dev", step_dev)
        .num("step_ok", (int)(untraced_us > 0 && std::abs(step_dev) <= 0.05))
        .num("stamped", stamped)
        .num("stamps_min", stamped ? smin : 0.0)
        .num("stamps_max", stamped ? smax : 0.0)
        .num("stamps_unmatched", unmatched)
        .num("stamps_ok", (int)stamps_ok)
        .emit();
    if (run.quiet) return;
    printf("trace: %s, %d measured steps%s; %zu kernels recorded: %d placed by their launch call, %d by the "
           "synchronized LABEL step, %d by launch order (%s), %d nowhere; %llu records dropped\n",
           t.library().c_str(), nsteps, run.graph ? " (CUDA graph replays, stages from the LABEL step)" : "", K.size(),
           placed_launch, placed_sync, placed_order, order.how.c_str(), unassigned, (unsigned long long)t.dropped);
    printf("trace API records (%s, enabling: %s): %llu runtime, %llu driver, %llu internal launches; %d launch calls "
           "(%d known only by a kernel's correlation id%s%s); most frequent: %s\n",
           t.seen.mode.c_str(), t.seen.enable.c_str(), (unsigned long long)t.seen.runtime,
           (unsigned long long)t.seen.driver, (unsigned long long)t.seen.internal, L.total, L.by_corr,
           L.by_corr_ids.empty() ? "" : ": ", L.by_corr_ids.c_str(), t.apis.empty() ? "none" : api_top(t.apis, 8).c_str());
    if (by_order)
        printf("check launch order: %d of %d expected %s after LABEL, %d steps unlike LABEL, %d kernels before their "
               "step began: %s\n",
               order.found, order.expected, order.how == "graph-order" ? "graph replays" : "kernels", order.mismatch,
               order.conflicts, order_ok ? "OK" : "MISMATCH");
    printf("check kernels per step: %d..%d seen, %d..%d launched (%s): %s\n", kmin, kmax, lmin, lmax,
           launched_from.c_str(), kernels_ok ? "OK" : "MISMATCH");
    printf("check step time: %.2f us traced (kernels + gaps) vs %.2f us untraced (CUDA events): %+.1f%% %s "
           "(traced steps by CUDA events: %.2f us)\n",
           trace_step_us, untraced_us, 100 * step_dev, std::abs(step_dev) <= 0.05 ? "OK" : "OFF BY MORE THAN 5%",
           run.traced_step_ms * 1e3);
    if (!slots.empty() || missed)
        printf("check stage stamps: %d kernels of the last step, their stages cover %.1f..%.1f%% of their "
               "CUPTI durations, %d stamped launches without their kernel's stamps, %d without a free slot: %s (clock "
               "offset spread %lld ns)\n",
               stamped, stamped ? 100 * smin : 0.0, stamped ? 100 * smax : 0.0, unmatched, missed,
               stamps_ok ? "OK" : "NOT WITHIN 5%", spread);
}

}  // namespace gd
