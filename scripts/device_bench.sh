#!/usr/bin/env bash
# One GPU call: build BF16 (detected CC); optional A/B of experimental csrc trees (.data/exp_*.tar.gz, each a
# `tar czf` of csrc + Makefile) against the working tree (optimized B=1,16, 512 new tokens, median of 5, through
# `gpt2driver compare --bin-dir`); then `gpt2driver bench` (naive/kvonly/optimized + Hugging Face eager and static
# cache + torch.compile on the same weights; BENCH_ARGS adds options, e.g. "--model gpt2-xl" or
# "-b 1 -b 2 -b 4 -b 8 -b 16 -b 32 -b 64 -b 128 -b 256" for the curve, "--gpt2-optim DIR --llmc DIR").
# PROFILE=1 adds `gpt2driver profile --tool ncu|builtin`; GPU_TESTS=1 adds pytest -m gpu and memcheck. Logs and
# result tables in $OUT/logs.tgz; the bench table printed last.
. "$(dirname "$0")/common.sh"
rm -rf build results /tmp/exp  # copies keep their mtimes: never trust an old build there
install_driver
SECONDS=0
for t in .data/exp_*.tar.gz; do [ -f "$t" ] || continue; e=$(basename $t .tar.gz); mkdir -p /tmp/exp/$e && tar xzf $t -C /tmp/exp/$e && (cd /tmp/exp/$e && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j8 >"$OUT/build_$e.log" 2>&1) & done
$G build -j 16 >"$OUT/build.txt" 2>&1; echo "build rc=$?"; wait; echo "builds done in ${SECONDS}s"
if ls /tmp/exp/*/build/sm${GPU_CC}_bf16/optimized >/dev/null 2>&1; then
  mkdir -p models; $G checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
  for b in 1 16; do for d in build /tmp/exp/*/build; do
    n=$(basename $(dirname $d)); [ "$d" = build ] && n=current
    tm ${n}_b$b --bin-dir $d/sm${GPU_CC}_bf16 --checkpoint models/gpt2_bf16.bin --variants optimized -n 512 -b $b
  done; done
fi
if [ -n "${PROFILE:-}" ]; then
  for b in 1 16; do timeout 150 $G profile --tool ncu -b $b --steps 1 --warmup 4 --prompt-len 256 --top 12 >"$OUT/profile_ncu_b$b.txt" 2>&1; echo "== profile ncu B=$b rc=$?"; done
  timeout 60 $G profile --tool builtin -b 1 --steps 16 >"$OUT/profile_builtin.txt" 2>&1; echo "== profile builtin rc=$?"
fi
if [ -n "${GPU_TESTS:-}" ]; then
  SECONDS=0; timeout ${GPU_TESTS_TIMEOUT:-240} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -2 "$OUT/pytest_gpu.txt"
  M=models/gpt2_bf16.bin; mkdir -p models; [ -f $M ] || $G checkpoint random --model gpt2 --dtype bf16 --seed 0 $M >/dev/null
  for p in optimized validate; do timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 build/sm${GPU_CC}_bf16/$p -e $M -b 3 -g 8 --prompt-len 5 -q > "$OUT/memcheck_$p.txt" 2>&1; echo "memcheck $p rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$p.txt")"; done
fi
[ -s "$T" ] && { echo "== A/B (ms/step, tok/s)"; cat "$T"; }
SECONDS=0; timeout ${BENCH_TIMEOUT:-420} $G bench ${BENCH_ARGS:-} --out results/bench/run >"$OUT/bench.txt" 2>"$OUT/bench.err"
echo "== bench rc=$? in ${SECONDS}s"; grep -v "generate " "$OUT/bench.err" | tail -12; cat "$OUT/bench.txt"
