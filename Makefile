# gpt2driver engine: five executables per (compute capability, precision) build directory.
#   make GPU_COMPUTE_CAPABILITY=90 PRECISION=BF16     -> build/sm90_bf16/{naive,kvonly,optimized,validate,profile}
#   make host                                         -> build/host/loadcheck (loaders only, no GPU needed)
#   make clean
# CUDA_HOME (nvcc, runtime) and CUBLAS_HOME (a dir with include/ and lib/ or lib64/, e.g. the nvidia-cublas
# wheel's nvidia/cu13) can be overridden.

GPU_COMPUTE_CAPABILITY ?=
PRECISION ?= BF16
CUDA_HOME ?= /usr/local/cuda
CUBLAS_HOME ?= $(CUDA_HOME)
BUILD_ROOT ?= build
NVCC ?= $(if $(wildcard $(CUDA_HOME)/bin/nvcc),$(CUDA_HOME)/bin/nvcc,nvcc)
CXX ?= g++

CC_ := $(strip $(GPU_COMPUTE_CAPABILITY))
PREC_LOWER := $(if $(filter FP32,$(PRECISION)),fp32,$(if $(filter FP16,$(PRECISION)),fp16,$(if $(filter BF16,$(PRECISION)),bf16,)))
BUILD_DIR := $(BUILD_ROOT)/sm$(CC_)_$(PREC_LOWER)
PROGRAMS := naive kvonly optimized validate profile

# Library objects shared by every program; one program object each.
LIB_SRCS := csrc/common/check.cpp csrc/engine/protocol.cpp csrc/engine/args.cpp csrc/model/checkpoint.cpp \
            csrc/model/tokenizer.cpp csrc/kernels/embedding.cu csrc/kernels/layernorm.cu csrc/kernels/matmul.cu \
            csrc/kernels/gemv.cu csrc/kernels/linear_mma.cu csrc/kernels/launch.cu csrc/kernels/elementwise.cu csrc/kernels/attention.cu csrc/kernels/sampling.cu csrc/kernels/link_product.cu csrc/kernels/link_attention.cu \
            csrc/engine/variant.cpp csrc/engine/weights.cu csrc/engine/stage_timer.cu csrc/engine/gpt2.cu csrc/engine/decode_links.cu csrc/engine/session.cu csrc/apps/generate.cu \
            csrc/engine/trace.cpp
LIB_OBJS := $(patsubst csrc/%,$(BUILD_DIR)/obj/%.o,$(LIB_SRCS))
BINS := $(addprefix $(BUILD_DIR)/,$(PROGRAMS))

CUBLAS_INC := $(CUBLAS_HOME)/include
CUBLAS_LIB := $(firstword $(wildcard $(CUBLAS_HOME)/lib64/libcublasLt.so* $(CUBLAS_HOME)/lib/libcublasLt.so*))
CUBLAS_LIBDIR := $(dir $(CUBLAS_LIB))
# The wheel ships only libcublasLt.so.13: link that file by name when there is no unversioned library.
CUBLAS_LINK := $(if $(wildcard $(CUBLAS_LIBDIR)libcublasLt.so),-lcublasLt,-l:$(notdir $(CUBLAS_LIB)))

# NVCC_EXTRA: more nvcc flags, e.g. a tuning constant (-DGD_MIN_SPLIT_KEYS=128) in its own BUILD_ROOT.
NVCC_EXTRA ?=
NVCC_FLAGS := -O3 -std=c++17 -lineinfo -DPRECISION_$(PRECISION) $(NVCC_EXTRA) \
              -gencode arch=compute_$(CC_),code=[sm_$(CC_),compute_$(CC_)] \
              -I$(CUBLAS_INC) -Xcompiler -Wall -MMD -MP
LD_FLAGS := -L$(CUBLAS_LIBDIR) $(CUBLAS_LINK) -Xlinker -rpath -Xlinker $(abspath $(CUBLAS_LIBDIR)) -ldl
# trace.cpp (profile --trace): CUPTI's headers for its types only (libcupti is opened at run time, never linked;
# without the headers the build still succeeds), and the toolkit it looks in first.
$(BUILD_DIR)/obj/engine/trace.cpp.o: NVCC_FLAGS += $(addprefix -I,$(wildcard $(CUDA_HOME)/extras/CUPTI/include)) \
                                                  -DGD_CUDA_HOME='"$(abspath $(CUDA_HOME))"'

.PHONY: all check-config host clean help
# Keep the object files (make would delete them as intermediates and rebuild everything next time).
.SECONDARY:
.DEFAULT_GOAL := all

help:
	@sed -n '1,8p' Makefile

check-config:
ifeq ($(CC_),)
	$(error GPU_COMPUTE_CAPABILITY is not set: e.g. make GPU_COMPUTE_CAPABILITY=90 (75 = T4, 80 = A100, 86, 89, 90 = H100); `gpt2driver build` detects it)
endif
ifeq ($(shell echo '$(CC_)' | grep -Ex '[1-9][0-9]{1,2}[af]?' >/dev/null && echo ok),)
	$(error GPU_COMPUTE_CAPABILITY='$(CC_)' is not a compute capability like 75, 80 or 90)
endif
ifeq ($(shell [ "$$(echo '$(CC_)' | tr -dc 0-9)" -ge 70 ] 2>/dev/null && echo ok),)
	$(error GPU_COMPUTE_CAPABILITY=$(CC_) is too old: the engine needs 70 or newer)
endif
ifeq ($(PREC_LOWER),)
	$(error PRECISION='$(PRECISION)' must be FP32, FP16 or BF16, in capitals (e.g. PRECISION=BF16))
endif
ifeq ($(shell command -v '$(NVCC)' 2>/dev/null),)
	$(error nvcc not found: not in CUDA_HOME=$(CUDA_HOME)/bin nor on PATH: install the CUDA toolkit, or set CUDA_HOME to it (or NVCC to the compiler))
endif
ifeq ($(CUBLAS_LIB),)
	$(error no libcublasLt under CUBLAS_HOME=$(CUBLAS_HOME) (lib64/ or lib/): set CUBLAS_HOME, e.g. to the nvidia-cublas wheel's nvidia/cu13)
endif
ifeq ($(wildcard $(CUBLAS_INC)/cublasLt.h),)
	$(error no cublasLt.h in $(CUBLAS_INC): set CUBLAS_HOME to a directory with include/cublasLt.h)
endif

all: check-config
	@$(MAKE) --no-print-directory $(BINS)
	@echo "built $(PROGRAMS) in $(BUILD_DIR)"

$(BUILD_DIR)/obj/%.cu.o: csrc/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(BUILD_DIR)/obj/%.cpp.o: csrc/%.cpp
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -x cu -c $< -o $@

$(BUILD_DIR)/%: $(BUILD_DIR)/obj/apps/%.cu.o $(LIB_OBJS)
	$(NVCC) $(NVCC_FLAGS) $^ -o $@ $(LD_FLAGS)

# Host-only loader checks: plain C++, no CUDA needed.
HOST_SRCS := csrc/common/check.cpp csrc/engine/protocol.cpp csrc/model/checkpoint.cpp csrc/model/tokenizer.cpp \
             csrc/host/loadcheck.cpp
host: $(BUILD_ROOT)/host/loadcheck
$(BUILD_ROOT)/host/loadcheck: $(HOST_SRCS) $(wildcard csrc/*/*.h)
	@mkdir -p $(dir $@)
	$(CXX) -O2 -std=c++17 -Wall -Wextra $(HOST_SRCS) -o $@

clean:
	rm -rf $(BUILD_ROOT)

-include $(shell find $(BUILD_ROOT) -name '*.d' 2>/dev/null)
