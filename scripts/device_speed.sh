#!/usr/bin/env bash
# One GPU call for a speed change: build the working tree (all precisions) and the base commit's csrc
# (.data/base.tar.gz from `git archive --format=tar.gz -o .data/base.tar.gz <base> csrc Makefile`) for the
# detected CC; validate, memcheck + racecheck the new optimized; time base vs new (B=1,4,16, 512 new tokens,
# median of 5) and the optimized ablations; ncu + builtin profile tables; GPU tests (GPU_TESTS=1).
# PRECS (default "BF16 FP16 FP32") picks the precisions built; ALTS="name=-DMACRO=value ..." also times BF16
# builds of the working tree with those nvcc defines (NVCC_EXTRA); NEW_FLAGS="--flag ..." times new with each; XL=1 adds base vs new on the gpt2-xl shape, B=1;
# PREFILL=1 base vs new time to first token (512-token prompt, B=16) and naive B=16, validate P=300, memcheck P=600.
# QUICK=1 leaves out the racecheck, the greedy-token comparison, the ablations and the profiles (a short call).
# Logs in $OUT/logs.tgz, the timing table last.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'cp -r results "$OUT/" 2>/dev/null; tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gpt2d_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
rm -rf build build_alt* results /tmp/base
G="python3 -m gpt2driver"
python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
SECONDS=0
mkdir -p /tmp/base && tar xzf .data/base.tar.gz -C /tmp/base && (cd /tmp/base && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j8 >"$OUT/build_base.log" 2>&1) &
for p in ${PRECS:-BF16 FP16 FP32}; do make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=$p -j16 >"$OUT/build_$p.log" 2>&1 || { echo "build $p failed"; tail -20 "$OUT/build_$p.log"; exit 1; }; done
for pair in ${ALTS:-}; do  # the working tree with extra nvcc defines, BF16 only
  a=${pair%%=*}
  make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 BUILD_ROOT=build_alt$a NVCC_EXTRA="${pair#*=}" -j16 >"$OUT/build_alt$a.log" 2>&1 || { echo "build alt$a failed"; tail -20 "$OUT/build_alt$a.log"; exit 1; }
done
wait; echo "builds done in ${SECONDS}s"
B=build/sm${GPU_CC}_bf16; OLD=/tmp/base/build/sm${GPU_CC}_bf16
mkdir -p models; python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
M=models/gpt2_bf16.bin
timeout 90 $B/validate -e $M -b 3 -g 64 --prompt-len 7 -q > "$OUT/validate.txt" 2>&1; echo "validate B=3 rc=$? $(grep -o 'vsummary.*' "$OUT/validate.txt" | head -2 | cut -c1-150)"
timeout 90 $B/validate -e $M -b 16 -g 32 --prompt-len 100 -q > "$OUT/validate16.txt" 2>&1; echo "validate B=16 rc=$?"
for b in 1 16; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b $b -g 8 --prompt-len 70 --warmup 0 -q > "$OUT/memcheck_b$b.txt" 2>&1; echo "memcheck optimized B=$b rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_b$b.txt")"
done
if [ -z "${QUICK:-}" ]; then
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $B/optimized -e $M -b 2 -g 3 --prompt-len 1 --warmup 0 -q > "$OUT/racecheck.txt" 2>&1; echo "racecheck optimized B=2 rc=$? $(grep -E 'SUMMARY' "$OUT/racecheck.txt")"
# greedy tokens: new fused argmax vs the base's sample kernel, same weights and prompts
for b in 1 16; do
  $OLD/optimized -e $M -b $b -g 200 --prompt-len 3 -q | grep '^##GPT2D 1 tokens' > "$OUT/tok_old_b$b.txt"
  $B/optimized -e $M -b $b -g 200 --prompt-len 3 -q | grep '^##GPT2D 1 tokens' > "$OUT/tok_new_b$b.txt"
  cmp -s "$OUT/tok_old_b$b.txt" "$OUT/tok_new_b$b.txt" && echo "B=$b greedy tokens base == new ($(wc -l < "$OUT/tok_new_b$b.txt") rows)" || echo "B=$b greedy tokens DIFFER base vs new"
done
fi
T="$OUT/timing.txt"; : > "$T"
tm() { local label=$1; shift; timeout 90 "$@" -e $M -g 512 --warmup 1 --repeat 5 -q > "$OUT/t_$label.txt" 2>&1; echo "$label $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/t_$label.txt" | tail -1)" | tee -a "$T"; }
for b in 1 4 16; do
  tm base_b$b $OLD/optimized -b $b
  tm new_b$b $B/optimized -b $b
done
for pair in ${ALTS:-}; do
  a=${pair%%=*}; A=build_alt$a/sm${GPU_CC}_bf16
  timeout 90 $A/validate -e $M -b 1 -g 300 --prompt-len 7 -q > "$OUT/validate_alt$a.txt" 2>&1; echo "validate alt$a B=1 rc=$?"
  for b in 1 4 16; do tm alt${a}_b$b $A/optimized -b $b; done
done
for f in ${NEW_FLAGS:-}; do for b in 1 4 16; do tm new_b${b}_${f#--} $B/optimized -b $b $f; done; done
if [ -z "${QUICK:-}" ]; then
tm new_b1_nopdl $B/optimized -b 1 --no-pdl
tm new_b1_nograph $B/optimized -b 1 --no-graph
tm new_b1_nofused $B/optimized -b 1 --no-fused
tm new_b1_nosplit $B/optimized -b 1 --no-split-attn
fi
if [ -n "${XL:-}" ]; then
  python3 -m gpt2driver checkpoint random --model gpt2-xl --dtype bf16 --seed 0 models/gpt2xl_bf16.bin >/dev/null
  tmx() { local label=$1; shift; "$@" -e models/gpt2xl_bf16.bin -b 1 -g 512 --warmup 1 --repeat 3 -q > "$OUT/t_$label.txt" 2>&1; echo "$label $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/t_$label.txt" | tail -1)" | tee -a "$T"; }
  tmx xl_base_b1 $OLD/optimized
  tmx xl_new_b1 $B/optimized
fi
if [ -n "${PREFILL:-}" ]; then  # time to first token of a 512-token prompt at B=16, and naive (whole-sequence attention)
  for v in base new; do
    d=$B; [ $v = base ] && d=$OLD
    timeout 120 $d/optimized -e $M -b 16 -g 16 --prompt-len 512 --warmup 1 --repeat 5 -q > "$OUT/prefill_$v.txt" 2>&1; echo "prefill512_b16_$v $(grep -o 'prefill_ms=[0-9.e+-]*' "$OUT/prefill_$v.txt" | tail -1)" | tee -a "$T"
    timeout 120 $d/naive -e $M -b 16 -g 128 --warmup 1 --repeat 3 -q > "$OUT/naive_$v.txt" 2>&1; echo "naive_b16_g128_$v $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/naive_$v.txt" | tail -1)" | tee -a "$T"
  done
  timeout 120 $B/validate -e $M -b 16 -g 16 --prompt-len 300 -q > "$OUT/validate_p300.txt" 2>&1; echo "validate B=16 P=300 rc=$? $(grep -o 'vsummary.*result=[A-Z]*' "$OUT/validate_p300.txt" | cut -c1-60,140- | tr '\n' ' ')"
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b 4 -g 4 --prompt-len 600 --warmup 0 -q > "$OUT/memcheck_p600.txt" 2>&1; echo "memcheck optimized P=600 B=4 rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_p600.txt")"
fi
if [ -n "${ATTN_NCU:-}" ]; then  # stall reasons, occupancy and memory of one split-attention launch at B=16
  timeout 120 ncu --kernel-name regex:attention_split --launch-skip 8 --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis $B/profile -e $M -b 16 --steps 1 --warmup 2 --prompt-len 256 -q > "$OUT/ncu_attn_b16.txt" 2>&1; echo "ncu attention B=16 rc=$?"
  grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Block Limit|Stall|Warp Cycles Per Issued|Theoretical Occ|Waves Per SM|Memory Throughput" "$OUT/ncu_attn_b16.txt" | head -30
fi
if [ -z "${QUICK:-}" ]; then
for b in 1 16; do
  timeout 150 $G profile --tool ncu -b $b --steps 1 --warmup 4 --prompt-len 256 --top 12 >"$OUT/profile_ncu_b$b.txt" 2>&1; echo "== profile ncu B=$b rc=$?"; tail -14 "$OUT/profile_ncu_b$b.txt" | head -9
done
timeout 60 $G profile --tool builtin -b 1 --steps 16 >"$OUT/profile_builtin.txt" 2>&1; echo "== builtin rc=$?"; tail -14 "$OUT/profile_builtin.txt" | head -13
fi
if [ -n "${GPU_TESTS:-}" ]; then
  SECONDS=0; timeout ${GPU_TESTS_TIMEOUT:-270} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -4 "$OUT/pytest_gpu.txt"
fi
echo "== timing (ms/step, tok/s)"; cat "$T"
