// Stage hooks of the profile executable: NVTX ranges (domain "decode") around the stages of a step, optional
// CUDA-event timing per stage, and StageScope, the guard a Runner puts around each stage's launches.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <vector>

namespace gd {

class Tracer;

// Stage hooks for the profile executable: NVTX ranges and optional CUDA-event timing per stage.
class StageTimer {
public:
    explicit StageTimer(bool events) : events_(events) {}
    ~StageTimer();
    void begin(const char* name, cudaStream_t s);
    void end(cudaStream_t s);
    void push_range(const char* name);  // NVTX only (layer<i>, MEASURE@decode)
    void pop_range();
    bool counting = false;  // only count stages while measuring
    Tracer* tracer = nullptr;  // profile --trace: the ranges' CPU times (engine/trace.h)
    struct Stat { std::string name; int calls = 0; double total_ms = 0; };
    std::vector<Stat> collect();  // synchronizes, sums event pairs per stage name (first-seen order)
private:
    bool events_;
    struct Pending { int stat; cudaEvent_t a, b; };
    std::vector<Pending> pending_;
    std::vector<Stat> stats_;
    std::vector<cudaEvent_t> pool_;
    int open_stat_ = -1;
    cudaEvent_t open_ev_ = nullptr;
    cudaEvent_t event();
};

// Opens stage `name` on the timer (if any) for its lifetime: the launches inside it are that stage's.
class StageScope {
public:
    StageScope(StageTimer* t, const char* name, cudaStream_t s) : t_(t), s_(s) {
        if (t_) t_->begin(name, s_);
    }
    ~StageScope() {
        if (t_) t_->end(s_);
    }
    StageScope(const StageScope&) = delete;
    StageScope& operator=(const StageScope&) = delete;

private:
    StageTimer* t_;
    cudaStream_t s_;
};

}  // namespace gd
