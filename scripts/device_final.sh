#!/usr/bin/env bash
# One call on the GPU machine for a session's end: driver end to end (build with detected CC, default sweep =
# the benchmark table, validate, run --prompt), optimized ablations, memcheck, GPU tests. Logs in $OUT/logs.tgz.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gpt2d_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
rm -rf build results  # copies keep their mtimes: never trust an old build there
G="python3 -m gpt2driver"  # the python that has torch, click, pandas (a bare `gpt2driver` may be another pip's)
python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
$G doctor >"$OUT/doctor.txt" 2>&1; tail -12 "$OUT/doctor.txt"
$G build 2>&1 | tee "$OUT/build.txt" | tail -4
echo "== gpt2driver sweep (default)"; SECONDS=0
timeout 300 $G sweep >"$OUT/sweep.txt" 2>"$OUT/sweep.err"; echo "sweep rc=$? in ${SECONDS}s"
cp results/gpt2_optim/results.csv "$OUT/" 2>/dev/null
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
B=build/sm${GPU_CC}_bf16; M=$(ls $GPT2DRIVER_HOME/models/*bf16*.bin | head -1)
timeout 120 $G validate -b 2 -n 128 >"$OUT/validate.txt" 2>&1; echo "validate rc=$?"; tail -4 "$OUT/validate.txt"
timeout 60 $G run --prompt "The quick brown fox" -b 2 -n 24 >"$OUT/run.txt" 2>&1; echo "run rc=$?"; tail -6 "$OUT/run.txt"
for flag in "" --no-graph --no-gemv --no-fused --no-split-attn --no-pdl; do
  $B/optimized -e $M -b 1 -g 512 --repeat 3 -q $flag > "$OUT/ablate$flag.txt" 2>&1; echo "optimized B=1 ${flag:-all-on} $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/ablate$flag.txt" | tail -1)"
done
for prog in naive kvonly optimized; do
  compute-sanitizer --tool memcheck --error-exitcode 9 $B/$prog -e $M -b 3 -g 8 --prompt-len 5 --warmup 0 -q > "$OUT/memcheck_$prog.txt" 2>&1; echo "memcheck $prog rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$prog.txt")"
done
compute-sanitizer --tool memcheck --error-exitcode 9 $B/validate -e $M -b 16 -g 4 --prompt-len 5 -q > "$OUT/memcheck_validate.txt" 2>&1; echo "memcheck validate B=16 rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_validate.txt")"
compute-sanitizer --tool memcheck --error-exitcode 9 $B/profile -e $M -b 2 --steps 3 --warmup 2 --builtin -q > "$OUT/memcheck_profile.txt" 2>&1; echo "memcheck profile rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_profile.txt")"
if [ -n "${GPU_TESTS:-}" ]; then
  timeout ${GPU_TESTS_TIMEOUT:-240} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$?"; tail -5 "$OUT/pytest_gpu.txt"
fi
echo "== sweep table"; tail -25 "$OUT/sweep.txt"
