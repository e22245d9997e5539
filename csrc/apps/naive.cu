#include "generate.h"

int main(int argc, char** argv) { return gd::generate_main(gd::Program::Naive, argc, argv); }
