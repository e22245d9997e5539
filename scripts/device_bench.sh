#!/usr/bin/env bash
# One GPU call: build BF16 (detected CC); optional A/B of experimental csrc trees (.data/exp_*.tar.gz, each a
# `tar czf` of csrc + Makefile) against the working tree (optimized B=1,16, 512 new tokens, median of 5); then
# `gpt2driver bench` (naive/kvonly/optimized + Hugging Face eager and static cache + torch.compile on the same
# weights). PROFILE=1 adds `gpt2driver profile --tool ncu|builtin`; GPU_TESTS=1 adds pytest -m gpu and memcheck. Logs and result tables in $OUT/logs.tgz;
# the bench table printed last.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'cp -r results "$OUT/" 2>/dev/null; tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gpt2d_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
rm -rf build results /tmp/exp  # copies keep their mtimes: never trust an old build there
G="python3 -m gpt2driver"
python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
SECONDS=0
for t in .data/exp_*.tar.gz; do [ -f "$t" ] || continue; e=$(basename $t .tar.gz); mkdir -p /tmp/exp/$e && tar xzf $t -C /tmp/exp/$e && (cd /tmp/exp/$e && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j8 >"$OUT/build_$e.log" 2>&1) & done
$G build -j 16 >"$OUT/build.txt" 2>&1; echo "build rc=$?"; wait; echo "builds done in ${SECONDS}s"
if ls /tmp/exp/*/build/sm${GPU_CC}_bf16/optimized >/dev/null 2>&1; then
  mkdir -p models; python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
  T="$OUT/ab.txt"; : > "$T"
  for b in 1 16; do for d in build /tmp/exp/*/build; do
    n=$(basename $(dirname $d)); [ "$d" = build ] && n=current
    $d/sm${GPU_CC}_bf16/optimized -e models/gpt2_bf16.bin -b $b -g 512 --warmup 1 --repeat 5 -q > "$OUT/ab_${n}_b$b.txt" 2>&1
    echo "$n B=$b $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/ab_${n}_b$b.txt" | tail -1)" | tee -a "$T"
  done; done
fi
if [ -n "${PROFILE:-}" ]; then
  for b in 1 16; do timeout 150 $G profile --tool ncu -b $b --steps 1 --warmup 4 --prompt-len 256 --top 12 >"$OUT/profile_ncu_b$b.txt" 2>&1; echo "== profile ncu B=$b rc=$?"; done
  timeout 60 $G profile --tool builtin -b 1 --steps 16 >"$OUT/profile_builtin.txt" 2>&1; echo "== profile builtin rc=$?"
fi
if [ -n "${GPU_TESTS:-}" ]; then
  SECONDS=0; timeout ${GPU_TESTS_TIMEOUT:-240} python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -2 "$OUT/pytest_gpu.txt"
  M=models/gpt2_bf16.bin; mkdir -p models; [ -f $M ] || python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 $M >/dev/null
  for p in optimized validate; do timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 build/sm${GPU_CC}_bf16/$p -e $M -b 3 -g 8 --prompt-len 5 -q > "$OUT/memcheck_$p.txt" 2>&1; echo "memcheck $p rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$p.txt")"; done
fi
SECONDS=0; timeout ${BENCH_TIMEOUT:-420} $G bench ${BENCH_ARGS:-} --out results/bench/run >"$OUT/bench.txt" 2>"$OUT/bench.err"
echo "== bench rc=$? in ${SECONDS}s"; grep -v "generate " "$OUT/bench.err" | tail -12; cat "$OUT/bench.txt"
[ -s results/bench/run/table.txt ] && { echo "== table.txt"; cat results/bench/run/table.txt; }
