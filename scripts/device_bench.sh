#!/usr/bin/env bash
# One GPU call: build BF16 (detected CC), `gpt2driver profile` with ncu (B=1, 16) and builtin (B=1), then
# `gpt2driver bench` (naive/kvonly/optimized + Hugging Face eager and static cache + torch.compile on the same
# weights). Logs and result tables in $OUT/logs.tgz; the bench table printed last.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'cp -r results "$OUT/" 2>/dev/null; tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gpt2d_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
rm -rf build results  # copies keep their mtimes: never trust an old build there
G="python3 -m gpt2driver"
python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
SECONDS=0; $G build -j 16 >"$OUT/build.txt" 2>&1; echo "build rc=$? in ${SECONDS}s"; tail -2 "$OUT/build.txt"
for b in 1 16; do
  SECONDS=0; timeout 150 $G profile --tool ncu -b $b --steps 1 --warmup 4 --prompt-len 256 --top 12 >"$OUT/profile_ncu_b$b.txt" 2>&1
  echo "== profile --tool ncu -b $b rc=$? in ${SECONDS}s"; cat "$OUT/profile_ncu_b$b.txt" | tail -22
done
SECONDS=0; timeout 60 $G profile --tool builtin -b 1 --steps 16 >"$OUT/profile_builtin.txt" 2>&1
echo "== profile --tool builtin -b 1 rc=$? in ${SECONDS}s"; tail -16 "$OUT/profile_builtin.txt"
SECONDS=0; timeout ${BENCH_TIMEOUT:-330} $G bench ${BENCH_ARGS:-} --out results/bench/run >"$OUT/bench.txt" 2>"$OUT/bench.err"
echo "== bench rc=$? in ${SECONDS}s"; tail -5 "$OUT/bench.err"; cat "$OUT/bench.txt"
