#!/usr/bin/env bash
# One call on the GPU machine for a session's end: driver end to end (build with detected CC, default sweep =
# the benchmark table, validate, run --prompt), the ablation sweep (configs/ablations.yaml: each speed trick off
# alone at B = 1, 4, 16, as a ratio to all on), memcheck, GPU tests. Logs in $OUT/logs.tgz.
. "$(dirname "$0")/common.sh"
rm -rf build results  # copies keep their mtimes: never trust an old build there
install_driver
$G doctor >"$OUT/doctor.txt" 2>&1; tail -12 "$OUT/doctor.txt"
$G build 2>&1 | tee "$OUT/build.txt" | tail -4
echo "== gpt2driver sweep (default)"; SECONDS=0
timeout 300 $G sweep >"$OUT/sweep.txt" 2>"$OUT/sweep.err"; echo "sweep rc=$? in ${SECONDS}s"
cp results/gpt2_optim/results.csv "$OUT/" 2>/dev/null
B=build/sm${GPU_CC}_bf16; M=$(ls $GPT2DRIVER_HOME/models/*bf16*.bin | head -1)
timeout 120 $G validate -b 2 -n 128 >"$OUT/validate.txt" 2>&1; echo "validate rc=$?"; tail -4 "$OUT/validate.txt"
timeout 60 $G run --prompt "The quick brown fox" -b 2 -n 24 >"$OUT/run.txt" 2>&1; echo "run rc=$?"; tail -6 "$OUT/run.txt"
echo "== gpt2driver sweep --config configs/ablations.yaml"; SECONDS=0
timeout ${ABLATIONS_TIMEOUT:-400} $G sweep --config configs/ablations.yaml >"$OUT/ablations.txt" 2>"$OUT/ablations.err"; echo "ablations rc=$? in ${SECONDS}s"
sed -n '/^ablations/,/^plot:/p' "$OUT/ablations.txt"
for prog in naive kvonly optimized; do
  compute-sanitizer --tool memcheck --error-exitcode 9 $B/$prog -e $M -b 3 -g 8 --prompt-len 5 --warmup 0 -q > "$OUT/memcheck_$prog.txt" 2>&1; echo "memcheck $prog rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$prog.txt")"
done
compute-sanitizer --tool memcheck --error-exitcode 9 $B/validate -e $M -b 16 -g 4 --prompt-len 5 -q > "$OUT/memcheck_validate.txt" 2>&1; echo "memcheck validate B=16 rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_validate.txt")"
compute-sanitizer --tool memcheck --error-exitcode 9 $B/profile -e $M -b 2 --steps 3 --warmup 2 --builtin -q > "$OUT/memcheck_profile.txt" 2>&1; echo "memcheck profile rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_profile.txt")"
if [ -n "${GPU_TESTS:-}" ]; then
  timeout ${GPU_TESTS_TIMEOUT:-240} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$?"; tail -5 "$OUT/pytest_gpu.txt"
fi
echo "== sweep table"; tail -25 "$OUT/sweep.txt"
