#!/usr/bin/env bash
# One GPU call to see where time goes outside the GPT-2 124M decode step: gpt2-xl decode at B=1 and the
# prefill of a 512-token prompt at B=16. Builds BF16 for the detected CC, times both (median), then ncu:
# the xl decode step per stage and per kernel (gpt2driver profile --tool ncu), and every prefill kernel (ncu
# on the profile executable's PREFILL range) grouped by kernel and grid. Logs in $OUT/logs.tgz.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=/tmp/gpt2d_home GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
SECONDS=0; rm -rf build
make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j16 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build ${SECONDS}s"
B=build/sm${GPU_CC}_bf16; mkdir -p models
python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
python3 -m gpt2driver checkpoint random --model gpt2-xl --dtype bf16 --seed 0 models/gpt2xl_bf16.bin >/dev/null
M=models/gpt2_bf16.bin; X=models/gpt2xl_bf16.bin
T="$OUT/timing.txt"; : > "$T"
timeout 120 $B/optimized -e $X -b 1 -g 512 --warmup 1 --repeat 3 -q > "$OUT/t_xl.txt" 2>&1; echo "xl_b1 $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/t_xl.txt" | tail -1)" | tee -a "$T"
timeout 120 $B/optimized -e $M -b 16 -g 16 --prompt-len 512 --warmup 1 --repeat 5 -q > "$OUT/t_prefill.txt" 2>&1; echo "prefill512_b16 $(grep -o 'prefill_ms=[0-9.e+-]*' "$OUT/t_prefill.txt" | tail -1)" | tee -a "$T"
for by in stage kernel; do
  timeout 200 python3 -m gpt2driver profile --tool ncu --by $by -e $X -b 1 --steps 1 --warmup 4 --top 0 > "$OUT/ncu_xl_$by.txt" 2>&1; echo "== ncu xl B=1 by $by rc=$?"; grep -E '^\|' "$OUT/ncu_xl_$by.txt" | head -20
done
timeout 300 ncu --nvtx --nvtx-include "decode@PREFILL/" --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes.sum --csv --print-units base --log-file "$OUT/ncu_prefill.csv" $B/profile -e $M -b 16 --prompt-len 512 --steps 1 --warmup 0 -q > "$OUT/ncu_prefill.out" 2>&1; echo "== ncu prefill B=16 P=512 rc=$?"
python3 - "$OUT/ncu_prefill.csv" <<'PY'
import sys
from gpt2driver.profiling import parse_ncu_csv
df = parse_ncu_csv(open(sys.argv[1]).read())
df["us"] = df["duration_ns"] / 1e3
aggs = dict(calls=("us", "size"), total_us=("us", "sum"), mean_us=("us", "mean"))
for c in ("dram_pct", "sm_pct", "dram_bytes"):
    if c in df:
        aggs[c] = (c, "mean")
print("columns:", list(df.columns))
g = df.groupby(["name", "grid"], sort=False).agg(**aggs)
g = g.sort_values("total_us", ascending=False)
print(g.head(25).round(1).to_string())
print(f"prefill kernels: {len(df)} launches, kernel sum {df['us'].sum() / 1e3:.3f} ms")
PY
echo "== timing"; cat "$T"
