#include "stage_timer.h"

#include <nvtx3/nvToolsExt.h>

#include "../common/check.h"
#include "trace.h"

namespace gd {

StageTimer::~StageTimer() {
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
}

cudaEvent_t StageTimer::event() {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    pool_.push_back(e);
    return e;
}

// All ranges live in the NVTX domain "decode": nsys --nvtx-capture='MEASURE@decode' (range@domain),
// ncu --nvtx-include 'decode@MEASURE/' (domain@range, '/' = push/pop range).
static nvtxDomainHandle_t nvtx_domain() {
    static nvtxDomainHandle_t d = nvtxDomainCreateA("decode");
    return d;
}

static void push(const char* name) {
    nvtxEventAttributes_t a = {};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(nvtx_domain(), &a);
}

void StageTimer::push_range(const char* name) {
    push(name);
    if (tracer) tracer->range_push(name);
}
void StageTimer::pop_range() {
    nvtxDomainRangePop(nvtx_domain());
    if (tracer) tracer->range_pop();
}

void StageTimer::begin(const char* name, cudaStream_t s) {
    push_range(name);
    if (!events_ || !counting) return;
    int idx = -1;
    for (size_t i = 0; i < stats_.size(); i++)
        if (stats_[i].name == name) idx = (int)i;
    if (idx < 0) {
        stats_.push_back({name, 0, 0.0});
        idx = (int)stats_.size() - 1;
    }
    open_stat_ = idx;
    open_ev_ = event();
    CUDA_CHECK(cudaEventRecord(open_ev_, s));
}

void StageTimer::end(cudaStream_t s) {
    pop_range();
    if (!events_ || !counting || open_stat_ < 0) return;
    cudaEvent_t b = event();
    CUDA_CHECK(cudaEventRecord(b, s));
    pending_.push_back({open_stat_, open_ev_, b});
    open_stat_ = -1;
}

std::vector<StageTimer::Stat> StageTimer::collect() {
    CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& p : pending_) {
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, p.a, p.b));
        stats_[p.stat].calls++;
        stats_[p.stat].total_ms += ms;
    }
    pending_.clear();
    return stats_;
}

}  // namespace gd
