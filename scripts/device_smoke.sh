#!/usr/bin/env bash
# First look on a GPU machine: build, validate, sanitize and time the three variants. Logs under $OUT.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) cc=$GPU_CC"
export PYTHONUNBUFFERED=1
rm -rf build  # copies keep their mtimes: never trust an old build there
for P in BF16 FP32 FP16; do
  make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=$P -j16 >"$OUT/build_$P.log" 2>&1 || { tail -30 "$OUT/build_$P.log"; exit 1; }
done
mkdir -p models
for d in bf16 fp32; do python3 -m gpt2driver checkpoint random --model gpt2 --dtype $d --seed 0 models/gpt2_$d.bin >/dev/null; done
TK=.data/gpt2_tokenizer.bin
for P in bf16 fp32 fp16; do
  B=build/sm${GPU_CC}_$P; M=models/gpt2_$P.bin; [ $P = fp16 ] && M=models/gpt2_fp32.bin
  $B/validate -e $M -b 2 -g 64 --prompt-len 7 -q > "$OUT/validate_$P.txt" 2>&1; echo "validate $P rc=$?"
  grep vsummary "$OUT/validate_$P.txt"
done
B=build/sm${GPU_CC}_bf16; M=models/gpt2_bf16.bin
for prog in naive kvonly optimized; do
  compute-sanitizer --tool memcheck --error-exitcode 9 $B/$prog -e $M -b 2 -g 8 --prompt-len 5 --warmup 0 -q > "$OUT/memcheck_$prog.txt" 2>&1; echo "memcheck $prog rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$prog.txt")"
done
compute-sanitizer --tool memcheck --error-exitcode 9 $B/validate -e $M -b 2 -g 6 --prompt-len 5 -q > "$OUT/memcheck_validate.txt" 2>&1; echo "memcheck validate rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_validate.txt")"
compute-sanitizer --tool memcheck --error-exitcode 9 $B/profile -e $M -b 2 --steps 4 --warmup 2 --builtin -q > "$OUT/memcheck_profile.txt" 2>&1; echo "memcheck profile rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_profile.txt")"
$B/kvonly -e $M -tk $TK -b 2 -g 32 --prompt-ids 464,2068,7586,21831 -m 0 --temperature 0.9 --top-k 40 --top-p 0.95 > "$OUT/fixture_kvonly_text.txt" 2>&1
$B/profile -e $M -b 1 --steps 16 --builtin > "$OUT/fixture_profile_builtin.txt" 2>&1
echo "== bench (BF16, 1 start token, 512 new, warmup 1, repeat 3)"
for Bn in 1 4 16; do
  for prog in naive kvonly optimized; do
    R=1; [ $prog != naive ] && R=3
    $B/$prog -e $M -b $Bn -g 512 --warmup 1 --repeat $R -q > "$OUT/bench_${prog}_b$Bn.txt" 2>&1
    echo "$prog B=$Bn rc=$? $(grep -o 'timing.*' "$OUT/bench_${prog}_b$Bn.txt")"
  done
done
for flag in --no-graph --no-gemv --no-fused --no-split-attn --no-pdl; do
  $B/optimized -e $M -b 1 -g 512 --repeat 3 -q $flag > "$OUT/ablate$flag.txt" 2>&1; echo "optimized $flag B=1 $(grep -o 'tokens_per_s=[0-9.e+]*' "$OUT/ablate$flag.txt" | tail -1)"
done
# kernel tables with ncu: scripts/device_perf.sh
