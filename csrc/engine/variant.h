// The three generators as one set of switches: naive (no cache), kvonly (cache, plain kernels) and
// optimized (every speed trick, each of which --no-<name> turns off: engine/args.h Ablations).
#pragma once
#include <string>

#include "args.h"

namespace gd {

struct Variant {
    std::string name;
    bool use_cache = true;    // false: every step recomputes the whole sequence (naive)
    bool gemv = false;        // small-batch matrix-vector kernels for decode
    bool fused = false;       // bias/GELU/residual in the product's epilogue
    bool split_attn = false;  // decode attention split over blocks
    bool graph = false;       // decode step captured once as a CUDA graph
    bool pdl = false;         // programmatic dependent launch of the decode kernels (sm_90)
    bool short_links = false; // experimental: the v2 decode step (engine/decode_links.cu) instead of v1
    bool one_layer_weights = false;  // diagnostic: every layer uses layer 0's weights (they stay in L2)
};

// "naive", "kvonly" or "optimized" (with the switches and the diagnostic of a); EXIT_USAGE otherwise.
Variant make_variant(const std::string& name, const Args& a);

}  // namespace gd
