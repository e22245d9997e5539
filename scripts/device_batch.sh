#!/usr/bin/env bash
# One GPU call for the large-batch decode and the prefill (issue 14): build BF16 for the detected CC (and the
# base commit's csrc when .data/base.tar.gz exists: `git archive --format=tar.gz -o .data/base.tar.gz <base> csrc
# Makefile`); time optimized (and kvonly, KVONLY=1) at BATCHES (default "32 64 128 256"; 256 new tokens, median of
# REPEAT=3), base vs new; time to first token at B=16 P=512 and B=1 P=1000; TRACE=1 adds the kernels of a decode
# step at B=64 and 256 (position ~128, `gpt2driver profile --tool trace`) and the prefill's stages (builtin);
# VALIDATE=1 validates B=64 and a 1000-token prompt and runs memcheck at B=256 (MEMCHECK=0: not);
# ATTN_NCU=1 ncu's sections of the decode attention at B=256 (ATTN_NCU_PROMPT; TRACE_PROMPTS: the trace's prompt
# lengths); BENCH=1 the README's tokens/s curve (gpt2driver bench, B = 1 .. 256); ALTS="name=-DMACRO=value ..."
# BF16 builds of the working tree with those defines, validated at B=64 and timed at ALT_BATCHES; GPU_TESTS=1 adds pytest -m gpu
# (GPU_TESTS_K filters); PREFILL_NCU=1 the prefill's kernels under ncu. Logs in $OUT/logs.tgz, the timing table last.
. "$(dirname "$0")/common.sh"
rm -rf build results /tmp/base
install_driver
SECONDS=0
HAVE_BASE=
if [ -f .data/base.tar.gz ]; then
  HAVE_BASE=1
  mkdir -p /tmp/base && tar xzf .data/base.tar.gz -C /tmp/base && (cd /tmp/base && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j8 >"$OUT/build_base.log" 2>&1) &
fi
for pair in ${ALTS:-}; do  # the working tree with extra nvcc defines, BF16 only
  a=${pair%%=*}
  make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 BUILD_ROOT=build_alt$a NVCC_EXTRA="${pair#*=}" -j8 >"$OUT/build_alt$a.log" 2>&1 &
done
for p in ${PRECS:-BF16}; do $G build --cc $GPU_CC --precision $p -j 16 >"$OUT/build_$p.log" 2>&1 || { echo "build $p failed"; tail -20 "$OUT/build_$p.log"; exit 1; }; done
wait; echo "builds done in ${SECONDS}s"
B=build/sm${GPU_CC}_bf16; OLD=/tmp/base/build/sm${GPU_CC}_bf16
mkdir -p models; $G checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
M=models/gpt2_bf16.bin
if [ -n "${VALIDATE:-}" ]; then
  V="$G validate --cc $GPU_CC --bin-dir $B --checkpoint $M --worst 0"
  timeout 120 $V -b 64 -n 16 --prompt-len 7 > "$OUT/validate64.txt" 2>&1; echo "validate B=64 rc=$? $(tail -1 "$OUT/validate64.txt")"
  timeout 120 $V -b 2 -n 8 --prompt-len 1000 > "$OUT/validate_p1000.txt" 2>&1; echo "validate B=2 P=1000 rc=$? $(tail -1 "$OUT/validate_p1000.txt")"
  [ -n "${MEMCHECK:-1}" ] && [ "${MEMCHECK:-1}" != 0 ] && timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b 256 -g ${MEMCHECK_GEN:-4} --prompt-len 70 --warmup 0 -q > "$OUT/memcheck_b256.txt" 2>&1; echo "memcheck optimized B=256 rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_b256.txt")"
fi
if [ -n "${BENCH:-}" ]; then  # the tokens/s curve (README): kvonly and optimized, B = 1 .. 256, 256 new tokens, median of 3
  SECONDS=0
  timeout ${BENCH_TIMEOUT:-200} $G bench -q --no-hf --variants kvonly,optimized -n 256 --warmup 1 --repeat 3 \
    -b 1 -b 2 -b 4 -b 8 -b 16 -b 32 -b 64 -b 128 -b 256 --out "$OUT/bench" >"$OUT/bench.txt" 2>&1
  echo "== bench rc=$? in ${SECONDS}s"; cat "$OUT/bench.txt"
fi
for pair in ${ALTS:-}; do  # each alternative: validate at B=64, then timed at ALT_BATCHES next to the default build
  a=${pair%%=*}; A=build_alt$a/sm${GPU_CC}_bf16
  [ -x $A/optimized ] || { echo "alt $a: build failed"; tail -5 "$OUT/build_alt$a.log"; continue; }
  for vb in 20 64; do  # B=20: three key splits per head at position ~150 (their merge); B=64: one
    timeout 120 $G validate --cc $GPU_CC --bin-dir $A --checkpoint $M --worst 0 -b $vb -n 16 --prompt-len 150 >"$OUT/validate_alt${a}_b$vb.txt" 2>&1; echo "validate alt$a B=$vb rc=$? $(tail -1 "$OUT/validate_alt${a}_b$vb.txt")"
  done
  for b in ${ALT_BATCHES:-64 256}; do
    REPEAT=3 tm alt${a}_b$b --bin-dir $A --checkpoint $M -n ${GEN:-256} --variants optimized -b $b
    REPEAT=3 tm def_b$b --bin-dir $B --checkpoint $M -n ${GEN:-256} --variants optimized -b $b
  done
done
C="--checkpoint $M -n ${GEN:-256}"
VARS=optimized; [ -n "${KVONLY:-}" ] && VARS=optimized,kvonly
for b in ${BATCHES:-32 64 128 256}; do
  [ -n "$HAVE_BASE" ] && REPEAT=${REPEAT:-3} tm base_b$b --bin-dir $OLD $C --variants optimized -b $b
  REPEAT=${REPEAT:-3} tm new_b$b --bin-dir $B $C --variants $VARS -b $b
done
for pb in "512 16" "1000 1"; do
  set -- $pb
  [ -n "$HAVE_BASE" ] && tm ttft_p$1_b$2_base --bin-dir $OLD --checkpoint $M --variants optimized -b $2 -n 2 --prompt-len $1
  tm ttft_p$1_b$2_new --bin-dir $B --checkpoint $M --variants optimized -b $2 -n 2 --prompt-len $1
done
if [ -n "${TRACE:-}" ]; then
  for b in ${TRACE_BATCHES:-64 256}; do for p in ${TRACE_PROMPTS:-128}; do
    timeout 120 $G profile --cc $GPU_CC --tool trace -b $b --steps 8 --warmup 4 --prompt-len $p --top 0 -q >"$OUT/trace_b${b}_p$p.txt" 2>&1
    echo "== trace optimized B=$b prompt $p rc=$?"; grep -A16 "^per stage" "$OUT/trace_b${b}_p$p.txt"
  done; done
fi
if [ -n "${ATTN_NCU:-}" ]; then  # the decode attention kernel at B=256, position ~130: ncu's sections as text
  timeout 200 ncu --kernel-name regex:"${ATTN_NCU_KERNEL:-attention_wide}" --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats \
    $B/profile -e $M -b 256 --prompt-len ${ATTN_NCU_PROMPT:-128} --steps 1 --warmup 1 >"$OUT/ncu_attn_b256.txt" 2>&1
  echo "== ncu attention B=256 rc=$?"; grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|L2 Hit|L1/TEX Hit|Mem Busy|Max Bandwidth|Eligible|Issued Warp|No Eligible|Shared Memory Configuration|Dynamic Shared|Waves Per SM" "$OUT/ncu_attn_b256.txt" | head -40
fi
if [ -n "${PREFILL_NCU:-}" ]; then  # the prefill's kernels under ncu: B=1 P=900 (one chunk), B=16 P=512 (its first chunks)
  for pb in "900 1 400" "512 16 200"; do
    set -- $pb
    timeout 240 $G profile --cc $GPU_CC --tool ncu --phase prefill -b $2 --prompt-len $1 --steps 1 --warmup 0 --launch-count $3 --top 0 -q >"$OUT/ncu_prefill_p$1_b$2.txt" 2>&1
    echo "== ncu prefill P=$1 B=$2 rc=$?"; grep -E "^\|" "$OUT/ncu_prefill_p$1_b$2.txt" | head -24
  done
fi
if [ -n "${GPU_TESTS:-}" ]; then
  SECONDS=0; timeout ${GPU_TESTS_TIMEOUT:-270} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -4 "$OUT/pytest_gpu.txt"
fi
echo "== timing (ms/step, tok/s; prefill_ms is the time to first token)"; cat "$T"
