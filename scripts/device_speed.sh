#!/usr/bin/env bash
# One GPU call for a speed change: build the working tree (all precisions) and the base commit's csrc
# (.data/base.tar.gz from `git archive --format=tar.gz -o .data/base.tar.gz <base> csrc Makefile`) for the
# detected CC; validate, memcheck + racecheck the new optimized; time base vs new (B=1,4,16, 512 new tokens,
# median of 5) and the optimized ablations; ncu + builtin profile tables; GPU tests (GPU_TESTS=1).
# PRECS (default "BF16 FP16 FP32") picks the precisions built; ALTS="name=-DMACRO=value ..." also times BF16
# builds of the working tree with those nvcc defines (NVCC_EXTRA); NEW_FLAGS="--flag ..." times new with each
# (passed to the executable with --engine-arg); XL=1 adds base vs new (and kvonly) on the gpt2-xl shape, B=1 and 16
# (128 new tokens); TRACE=1 traces new optimized and kvonly at B=1 and 16 (profile --trace --stamps, its checks);
# PREFILL=1 base vs new time to first token (512-token prompt, B=16) and naive B=16, validate P=300, memcheck P=600.
# QUICK=1 leaves out the racecheck, the greedy-token comparison, the ablations and the profiles (a short call).
# Every run of an executable goes through the driver (compare / validate / run --json / profile).
# Logs in $OUT/logs.tgz, the timing table last.
. "$(dirname "$0")/common.sh"
rm -rf build build_alt* results /tmp/base
install_driver
SECONDS=0
mkdir -p /tmp/base && tar xzf .data/base.tar.gz -C /tmp/base && (cd /tmp/base && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j8 >"$OUT/build_base.log" 2>&1) &
for p in ${PRECS:-BF16 FP16 FP32}; do $G build --cc $GPU_CC --precision $p -j 16 >"$OUT/build_$p.log" 2>&1 || { echo "build $p failed"; tail -20 "$OUT/build_$p.log"; exit 1; }; done
for pair in ${ALTS:-}; do  # the working tree with extra nvcc defines, BF16 only
  a=${pair%%=*}
  make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 BUILD_ROOT=build_alt$a NVCC_EXTRA="${pair#*=}" -j16 >"$OUT/build_alt$a.log" 2>&1 || { echo "build alt$a failed"; tail -20 "$OUT/build_alt$a.log"; exit 1; }
done
wait; echo "builds done in ${SECONDS}s"
B=build/sm${GPU_CC}_bf16; OLD=/tmp/base/build/sm${GPU_CC}_bf16
mkdir -p models; $G checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
M=models/gpt2_bf16.bin
V="$G validate --cc $GPU_CC --bin-dir $B --checkpoint $M"
timeout 90 $V -b 3 -n 64 --prompt-len 7 --worst 0 > "$OUT/validate.txt" 2>&1; echo "validate B=3 rc=$?"; cat "$OUT/validate.txt"
timeout 90 $V -b 16 -n 32 --prompt-len 100 --worst 0 > "$OUT/validate16.txt" 2>&1; echo "validate B=16 rc=$? $(tail -1 "$OUT/validate16.txt")"
for b in 1 16; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b $b -g 8 --prompt-len 70 --warmup 0 -q > "$OUT/memcheck_b$b.txt" 2>&1; echo "memcheck optimized B=$b rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_b$b.txt")"
done
if [ -z "${QUICK:-}" ]; then
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $B/optimized -e $M -b 2 -g 3 --prompt-len 1 --warmup 0 -q > "$OUT/racecheck.txt" 2>&1; echo "racecheck optimized B=2 rc=$? $(grep -E 'SUMMARY' "$OUT/racecheck.txt")"
# greedy tokens: the new build vs the base's, same weights and prompts
for b in 1 16; do same_tokens b$b $OLD $B --checkpoint $M -b $b -n 200 --prompt-len 3; done
fi
C="--checkpoint $M --variants optimized -n 512"
for b in 1 4 16; do
  tm base_b$b --bin-dir $OLD $C -b $b
  tm new_b$b --bin-dir $B $C -b $b
done
for pair in ${ALTS:-}; do
  a=${pair%%=*}; A=build_alt$a/sm${GPU_CC}_bf16
  timeout 90 $G validate --cc $GPU_CC --bin-dir $A --checkpoint $M -b 1 -n 300 --prompt-len 7 --worst 0 > "$OUT/validate_alt$a.txt" 2>&1; echo "validate alt$a B=1 rc=$?"
  for b in 1 4 16; do tm alt${a}_b$b --bin-dir $A $C -b $b; done
done
for f in ${NEW_FLAGS:-}; do for b in 1 4 16; do tm new_b${b}_${f#--} --bin-dir $B $C -b $b --engine-arg=$f; done; done
if [ -z "${QUICK:-}" ]; then
  timeout 300 $G compare --cc $GPU_CC --bin-dir $B --checkpoint $M --ablations -b 1 -n 512 --repeat 5 > "$OUT/ablations_b1.txt" 2>&1; echo "== ablations B=1 rc=$?"; cat "$OUT/ablations_b1.txt"
fi
if [ -n "${XL:-}" ]; then
  $G checkpoint random --model gpt2-xl --dtype bf16 --seed 0 models/gpt2xl_bf16.bin >/dev/null
  for b in 1 16; do
    REPEAT=3 tm xl_base_b$b --bin-dir $OLD --checkpoint models/gpt2xl_bf16.bin --variants optimized -n 128 -b $b
    REPEAT=3 tm xl_new_b$b --bin-dir $B --checkpoint models/gpt2xl_bf16.bin --variants optimized,kvonly -n 128 -b $b
    for pair in ${ALTS:-}; do a=${pair%%=*}; REPEAT=3 tm xl_alt${a}_b$b --bin-dir build_alt$a/sm${GPU_CC}_bf16 --checkpoint models/gpt2xl_bf16.bin --variants optimized -n 128 -b $b; done
  done
  timeout 90 $G validate --cc $GPU_CC --bin-dir $B --checkpoint models/gpt2xl_bf16.bin -b 16 -n 16 --prompt-len 5 --worst 0 > "$OUT/validate_xl16.txt" 2>&1; echo "validate xl B=16 rc=$? $(tail -1 "$OUT/validate_xl16.txt")"
fi
if [ -n "${TRACE:-}" ]; then  # the trace's own checks (issue 13): kernels per step, step time, stage stamps
  for v in optimized kvonly; do for b in 1 16; do
    timeout 90 $B/profile -e $M --variant $v -b $b --steps 16 --warmup 8 --trace --stamps >"$OUT/trace_${v}_b$b.txt" 2>&1
    echo "== trace $v B=$b rc=$?"; grep -E "^($v:|check)" "$OUT/trace_${v}_b$b.txt"
  done; done
  for d in base=$OLD ${ALTS:-}; do  # stage stamps of the base build and of each alternative at B=1 and 16
    a=${d%%=*}; bd=${d#*=}; [ "$a" = base ] || bd=build_alt$a/sm${GPU_CC}_bf16
    for b in 1 16; do timeout 60 $bd/profile -e $M -b $b --steps 16 --warmup 8 --trace --stamps >"$OUT/trace_${a}_b$b.txt" 2>&1; echo "trace $a B=$b rc=$?"; done
  done
fi
if [ -n "${PREFILL:-}" ]; then  # time to first token of a 512-token prompt at B=16, and naive (whole-sequence attention)
  for v in base new; do
    d=$B; [ $v = base ] && d=$OLD
    tm prefill512_b16_$v --bin-dir $d --checkpoint $M --variants optimized -b 16 -n 16 --prompt-len 512
    REPEAT=3 tm naive_b16_g128_$v --bin-dir $d --checkpoint $M --variants naive -b 16 -n 128
  done
  timeout 120 $V -b 16 -n 16 --prompt-len 300 --worst 0 > "$OUT/validate_p300.txt" 2>&1; echo "validate B=16 P=300 rc=$?"; cat "$OUT/validate_p300.txt"
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b 4 -g 4 --prompt-len 600 --warmup 0 -q > "$OUT/memcheck_p600.txt" 2>&1; echo "memcheck optimized P=600 B=4 rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_p600.txt")"
fi
if [ -n "${ATTN_NCU:-}" ]; then  # one split-attention launch at B=16: the driver's ncu table with occupancy and DRAM
  timeout 150 $G profile --cc $GPU_CC --tool ncu -b 16 --steps 1 --warmup 2 --prompt-len 256 --kernel-regex attention_split --launch-count 1 --sections SpeedOfLight,Occupancy,LaunchStats,WarpStateStats,MemoryWorkloadAnalysis --top 0 > "$OUT/ncu_attn_b16.txt" 2>&1; echo "ncu attention B=16 rc=$?"; tail -12 "$OUT/ncu_attn_b16.txt"
fi
if [ -z "${QUICK:-}" ]; then
for b in 1 16; do
  timeout 150 $G profile --cc $GPU_CC --tool ncu -b $b --steps 1 --warmup 4 --prompt-len 256 --top 12 >"$OUT/profile_ncu_b$b.txt" 2>&1; echo "== profile ncu B=$b rc=$?"; tail -14 "$OUT/profile_ncu_b$b.txt" | head -9
done
timeout 60 $G profile --cc $GPU_CC --tool builtin -b 1 --steps 16 >"$OUT/profile_builtin.txt" 2>&1; echo "== builtin rc=$?"; tail -14 "$OUT/profile_builtin.txt" | head -13
fi
if [ -n "${GPU_TESTS:-}" ]; then
  SECONDS=0; timeout ${GPU_TESTS_TIMEOUT:-270} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -4 "$OUT/pytest_gpu.txt"
fi
echo "== timing (ms/step, tok/s)"; cat "$T"
