#!/usr/bin/env bash
# Quick performance iteration on a GPU machine (BF16 only): build, validate, memcheck, time optimized,
# ablations, and an ncu kernel table of one decode step. Logs in $OUT/logs.tgz.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
rm -rf build  # copies keep their mtimes: never trust an old build there
make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j16 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
mkdir -p models
[ -f models/gpt2_bf16.bin ] || python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
B=build/sm${GPU_CC}_bf16; M=models/gpt2_bf16.bin
$B/validate -e $M -b 3 -g 64 --prompt-len 7 -q > "$OUT/validate.txt" 2>&1; echo "validate rc=$?"; grep vsummary "$OUT/validate.txt"
$B/validate -e $M -b 16 -g 32 --prompt-len 100 -q > "$OUT/validate16.txt" 2>&1; echo "validate B=16 rc=$?"; grep vsummary "$OUT/validate16.txt"
compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e $M -b 3 -g 8 --prompt-len 5 --warmup 0 -q > "$OUT/memcheck.txt" 2>&1; echo "memcheck optimized rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.txt")"
for Bn in 1 4 16; do
  $B/optimized -e $M -b $Bn -g 512 --warmup 1 --repeat 3 -q > "$OUT/bench_b$Bn.txt" 2>&1
  echo "optimized B=$Bn rc=$? $(grep -o 'timing.*' "$OUT/bench_b$Bn.txt")"
done
for flag in --no-graph --no-pdl --no-split-attn; do
  $B/optimized -e $M -b 1 -g 512 --repeat 3 -q $flag > "$OUT/ablate$flag.txt" 2>&1; echo "optimized $flag B=1 $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$OUT/ablate$flag.txt" | tail -1)"
done
for Bn in 1 16; do
timeout 180 ncu --nvtx --nvtx-include "decode@MEASURE/" --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed --csv --print-units base $B/profile -e $M -b $Bn --steps 1 --warmup 4 --prompt-len 256 -q > "$OUT/ncu_b$Bn.csv" 2>"$OUT/ncu_b$Bn.err"; echo "ncu B=$Bn rc=$?"
python3 - "$OUT/ncu_b$Bn.csv" <<'PY'
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
if not rows: print("no ncu rows"); sys.exit()
h=rows[0]; ki=h.index("Kernel Name"); mi=h.index("Metric Name"); vi=h.index("Metric Value")
t=collections.defaultdict(float); n=collections.Counter(); bw=collections.defaultdict(float)
for r in rows[1:]:
    k=r[ki].split("(")[0][:60]
    if r[mi]=="gpu__time_duration.sum": t[k]+=float(r[vi].replace(",","")); n[k]+=1
    else: bw[k]+=float(r[vi].replace(",",""))
tot=sum(t.values())
for k,v in sorted(t.items(),key=lambda x:-x[1]): print(f"{k[-50:]:50s} n={n[k]:3d} {v/1e3:8.1f} us {100*v/tot:5.1f}% dram {bw[k]/max(n[k],1):5.1f}%")
print(f"kernel sum {tot/1e3:.1f} us")
PY
done
