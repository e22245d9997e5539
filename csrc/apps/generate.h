// Entry point shared by naive, kvonly and optimized: warm-up and timed generations, result lines.
#pragma once
#include "../engine/args.h"

namespace gd {
int generate_main(Program program, int argc, char** argv);
}
