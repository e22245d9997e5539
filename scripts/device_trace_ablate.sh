#!/usr/bin/env bash
# One GPU call: the trace (issue 13) of optimized and kvonly at B = 1 and 16, by the profile executable (its
# self-checks) and by `gpt2driver profile --tool trace` (Chrome trace JSON, PNG, tables), then the ablation
# sweep (configs/ablations.yaml). Logs in $OUT/logs.tgz, the PNGs next to it; the tables printed last.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; LOG=/tmp/tlogs; mkdir -p "$LOG" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$LOG" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gd_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
G="python3 -m gpt2driver"
python3 -m pip install --no-deps --no-build-isolation -e . >"$LOG/pip.log" 2>&1 || { tail -3 "$LOG/pip.log"; exit 1; }
SECONDS=0; $G build -j 16 >"$LOG/build.txt" 2>&1; echo "build rc=$? in ${SECONDS}s"
B=$(ls -d build/sm*_bf16 | head -1); M=m124.bin
$G checkpoint random --model gpt2 --dtype bf16 --seed 0 $M >/dev/null
for v in optimized kvonly; do for b in 1 16; do
  timeout 90 $B/profile -e $M --variant $v -b $b --steps 16 --warmup 8 --trace --stamps >"$LOG/trace_${v}_b$b.txt" 2>&1
  echo "== $v B=$b rc=$?"; grep -E "^($v:|trace:|check)" "$LOG/trace_${v}_b$b.txt"
done; done
timeout 120 $G profile --tool trace -e $M -b 1 -b 16 --steps 16 --out "$LOG/trace" --top 70 >"$LOG/driver_trace.txt" 2>&1; echo "driver trace optimized rc=$?"
timeout 90 $G profile --tool trace --variant kvonly -e $M -b 1 -b 16 --steps 16 --out "$LOG/trace" --top 30 >"$LOG/driver_trace_kv.txt" 2>&1; echo "driver trace kvonly rc=$?"
grep -hE "check" "$LOG/driver_trace.txt" "$LOG/driver_trace_kv.txt" | head -12
n=0; for p in $(find "$LOG/trace" -name '*.png' | head -4); do n=$((n+1)); cp "$p" "$FINAL/timeline_${n}_$(basename $(dirname $p)).png"; done
SECONDS=0; timeout 240 $G sweep --config configs/ablations.yaml --out "$LOG/ablations" >"$LOG/ablations.txt" 2>&1; echo "ablations rc=$? in ${SECONDS}s"
tail -40 "$LOG/ablations.txt"
