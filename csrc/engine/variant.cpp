#include "variant.h"

#include "../common/check.h"

namespace gd {

Variant make_variant(const std::string& name, const Args& a) {
    Variant v;
    v.name = name;
    if (name == "naive") {
        v.use_cache = false;
    } else if (name == "optimized") {
        v.graph = a.on.graph;
        v.gemv = a.on.gemv;
        v.fused = a.on.fused;
        v.split_attn = a.on.split_attn;
        v.pdl = a.on.pdl;
        v.short_links = a.short_links;
        v.one_layer_weights = a.one_layer_weights;
    } else if (name != "kvonly") {
        GD_FAIL(EXIT_USAGE, "unknown variant '%s' (naive, kvonly or optimized)", name.c_str());
    }
    return v;
}

}  // namespace gd
