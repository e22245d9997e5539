#!/usr/bin/env bash
# One GPU call for the speed issue's other points: gpt2-xl shape at B=1 (decode step vs its floor), prefill
# time-to-first-token of a 512-token prompt at B=16, and the memory line (device used vs weights + KV cache).
# XL=1 adds the gpt2-xl run; GPU_TESTS=1 the GPU tests and a memcheck of a chunked prefill.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
rm -rf build
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j16 >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
B=build/sm${GPU_CC}_bf16; mkdir -p models
SECONDS=0; python3 -m gpt2driver checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
[ -n "${XL:-}" ] && python3 -m gpt2driver checkpoint random --model gpt2-xl --dtype bf16 --seed 0 models/gpt2xl_bf16.bin >/dev/null; echo "models in ${SECONDS}s"
python3 -c "
import torch; x=torch.empty(1<<29, dtype=torch.int16, device='cuda'); y=torch.empty_like(x); ts=[]
for i in range(20):
    s,e=torch.cuda.Event(True),torch.cuda.Event(True); s.record(); y.copy_(x); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
ts.sort(); print('copy GB/s (read+write, median of 20):', round(2*x.numel()*2/ts[10]/1e6))"
RUNS=("-e models/gpt2_bf16.bin -b 16 -g 16 --prompt-len 512" "-e models/gpt2_bf16.bin -b 16 -g 512")
[ -n "${XL:-}" ] && RUNS=("-e models/gpt2xl_bf16.bin -b 1 -g 512" "${RUNS[@]}")
for args in "${RUNS[@]}"; do
  $B/optimized $args --warmup 1 --repeat 5 -q > "$OUT/run.txt" 2>&1; echo "optimized $args rc=$?"; grep -E "^##GPT2D 1 (config|memory|timing)" "$OUT/run.txt" | sed 's/device="[^"]*"//' | cut -c1-260
  cat "$OUT/run.txt" >> "$OUT/all_runs.txt"
done
$B/validate -e models/gpt2_bf16.bin -b 16 -g 16 --prompt-len 300 -q > "$OUT/validate_p300.txt" 2>&1; echo "validate B=16 P=300 rc=$? $(grep -o 'vsummary.*result=[A-Z]*' "$OUT/validate_p300.txt" | cut -c1-60,140- | tr '\n' ' ')"
if [ -n "${GPU_TESTS:-}" ]; then
  for p in FP16 FP32; do make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=$p -j16 >"$OUT/build_$p.log" 2>&1 || echo "build $p failed"; done
  SECONDS=0; timeout 250 python3 -m pytest -m gpu -q -x -p no:cacheprovider tests/test_gpu_engine.py >"$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$? in ${SECONDS}s"; tail -3 "$OUT/pytest_gpu.txt"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $B/optimized -e models/gpt2_bf16.bin -b 4 -g 4 --prompt-len 600 --warmup 0 -q > "$OUT/memcheck.txt" 2>&1; echo "memcheck optimized P=600 B=4 rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck.txt")"
fi
$B/kvonly -e models/gpt2_bf16.bin -b 16 -g 16 --prompt-len 512 --warmup 1 --repeat 5 -q > "$OUT/run_kv.txt" 2>&1; echo "kvonly prefill 512 B=16: $(grep -o 'timing.*' "$OUT/run_kv.txt")"
