#!/usr/bin/env bash
# One GPU call to see where time goes outside the GPT-2 124M decode step: gpt2-xl decode at B=1 and the
# prefill of a 512-token prompt at B=16. Builds BF16 for the detected CC, times both (median, `gpt2driver
# compare`), then ncu through `gpt2driver profile`: the xl decode step per stage and per kernel, and every prefill
# kernel (the PREFILL range) per kernel and per stage. Logs in $OUT/logs.tgz.
. "$(dirname "$0")/common.sh"
install_driver
SECONDS=0; rm -rf build
$G build --cc $GPU_CC -j 16 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build ${SECONDS}s"
mkdir -p models
$G checkpoint random --model gpt2 --dtype bf16 --seed 0 models/gpt2_bf16.bin >/dev/null
$G checkpoint random --model gpt2-xl --dtype bf16 --seed 0 models/gpt2xl_bf16.bin >/dev/null
M=models/gpt2_bf16.bin; X=models/gpt2xl_bf16.bin
REPEAT=3 tm xl_b1 --checkpoint $X --variants optimized -b 1 -n 512
tm prefill512_b16 --checkpoint $M --variants optimized -b 16 -n 16 --prompt-len 512
for by in stage kernel; do
  timeout 200 $G profile --cc $GPU_CC --tool ncu --by $by -e $X -b 1 --steps 1 --warmup 4 --top 0 > "$OUT/ncu_xl_$by.txt" 2>&1; echo "== ncu xl B=1 by $by rc=$?"; head -24 "$OUT/ncu_xl_$by.txt"
done
for by in kernel stage; do
  timeout 300 $G profile --cc $GPU_CC --tool ncu --phase prefill --by $by -e $M -b 16 --prompt-len 512 --top 25 --csv "$OUT/ncu_prefill_$by.csv" > "$OUT/ncu_prefill_$by.txt" 2>&1; echo "== ncu prefill B=16 P=512 by $by rc=$?"; head -30 "$OUT/ncu_prefill_$by.txt"
done
echo "== timing"; cat "$T"
