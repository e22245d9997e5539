#!/usr/bin/env bash
# One GPU call for the decode v2 work: build the engine under test (BF16, FP16) from .data/csrc_snap.tar.gz
# (a `tar czf` of csrc + Makefile; else the working tree) and the base (.data/base.tar.gz, `git archive <base>
# csrc Makefile`); validate and memcheck v2 (--short-links); time base vs v2 vs the same build's default at B = 1, 4,
# 16 (512 new tokens, median of 5); builtin per-stage profile at B = 1 and 16; XL=1 adds gpt2-xl at B = 1 and 16
# (128 new tokens); then the GPU tests selected by GPU_K (pytest -k). The driver and tests come from
# .data/pysnap.tar.gz (`git archive HEAD gpt2driver tests pyproject.toml`) with this tree's GPU test file, so a
# driver edit in progress cannot break the call. Logs in $OUT/logs.tgz; the timing table is printed last.
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; LOG=/tmp/v2logs; mkdir -p "$LOG" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$LOG" .' EXIT
export PYTHONUNBUFFERED=1
W=/tmp/w; rm -rf "$W"; mkdir -p "$W/base"
tar xzf .data/pysnap.tar.gz -C "$W" && cp tests/test_gpu_engine.py "$W/tests/"
# the snapshot's driver may predate the driver's package layout: import the checkpoint module from where it is
[ -d "$W/gpt2driver/files" ] || sed -i 's/gpt2driver\.files import checkpoint/gpt2driver import checkpoint/; s/gpt2driver\.files\.checkpoint import/gpt2driver.checkpoint import/' "$W/tests/test_gpu_engine.py"
if [ -f .data/csrc_snap.tar.gz ]; then tar xzf .data/csrc_snap.tar.gz -C "$W"; else cp -r csrc Makefile "$W/"; fi
tar xzf .data/base.tar.gz -C "$W/base"
cp .data/gpt2_tokenizer.bin "$W/"
cd "$W" || exit 1
export PYTHONPATH=$W GPT2DRIVER_HOME=/tmp/gd_home GPT2DRIVER_TOKENIZER=$W/gpt2_tokenizer.bin
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
SECONDS=0
(cd base && make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=BF16 -j6 >"$LOG/build_base.log" 2>&1) &
for p in ${PRECS:-BF16 FP16}; do
  make GPU_COMPUTE_CAPABILITY=$GPU_CC PRECISION=$p -j12 >"$LOG/build_$p.log" 2>&1 || { echo "build $p failed"; grep -m8 -E "error|Error" "$LOG/build_$p.log"; exit 1; }
done
wait; echo "builds done in ${SECONDS}s"
N=build/sm${GPU_CC}_bf16; O=base/build/sm${GPU_CC}_bf16
mkrand() { python3 -c "from gpt2driver import checkpoint as ck; ck.make_random_checkpoint('$2', ck.ModelConfig.preset('$1'), dtype='bf16', seed=0)"; }
M=m124.bin; mkrand gpt2 $M
T="$LOG/timing.txt"; : >"$T"
gpu_tests() {
  [ -n "${GPU_K:-}" ] || return 0
  SECONDS=0
  timeout ${GPU_TIMEOUT:-280} python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_engine.py -k "$GPU_K" >"$LOG/pytest_gpu.txt" 2>&1
  echo "pytest gpu rc=$? in ${SECONDS}s: $(tail -1 "$LOG/pytest_gpu.txt")" | tee -a "$T"
  grep -E "^(FAILED|ERROR)|rel-err [0-9.e-]+ >" "$LOG/pytest_gpu.txt" | head -8
}
[ -n "${GPU_FIRST:-}" ] && gpu_tests
val() { local label=$1; shift; timeout 120 "$@" -q >"$LOG/$label.txt" 2>&1; echo "$label rc=$? $(grep -o 'vsummary variant=[a-z]* .*result=[A-Z]*' "$LOG/$label.txt" | sed -E 's/ steps=[0-9]+ rows=[0-9]+//; s/ tol_[a-z_]+=[0-9.e+-]+//g' | tr '\n' ' ')" | tee -a "$T"; }
val validate_b3 $N/validate -e $M -b 3 -g 64 --prompt-len 7
val validate_b16 $N/validate -e $M -b 16 -g 32 --prompt-len 100
val validate_b5_v2only $N/validate -e $M -b 5 -g 48 --prompt-len 300 --variants optimized --short-links
tm() { local label=$1; shift; timeout 90 "$@" -e $M -g ${GEN:-512} --warmup 1 --repeat ${REP:-5} -q >"$LOG/t_$label.txt" 2>&1; echo "$label rc=$? $(grep -o 'step_ms=[0-9.e+-]* tokens_per_s=[0-9.e+]*' "$LOG/t_$label.txt" | tail -1)" | tee -a "$T"; }
for b in ${BS:-1 4 16}; do
  [ -z "${NOBASE:-}" ] && tm base_b$b $O/optimized -b $b
  tm v2_b$b $N/optimized -b $b --short-links
  tm v1_b$b $N/optimized -b $b
  for e in ${ENVS:-}; do eval "$e tm v2_b${b}_${e%%=*} $N/optimized -b $b --short-links"; done
done
if [ -n "${TRACE:-}" ]; then  # CUPTI kernel timeline + stage stamps of the measured steps (raw trace records)
  for b in 1 16; do for f in "" "--short-links"; do
    n=trace_b${b}${f:+_v2}; timeout 120 $N/profile -e $M -b $b --steps 4 --warmup 4 --prompt-len 256 --trace --stamps $f >"$LOG/$n.txt" 2>&1
    echo "$n rc=$? $(grep -c '^##GPT2D 1 kernel' "$LOG/$n.txt") kernel records; $(grep -E 'step|idle|stamps' "$LOG/$n.txt" | grep -v '^##' | head -4 | tr '\n' ' ')" | tee -a "$T"
  done; done
fi
for b in ${MEMCHECK_BS:-1 16}; do
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $N/optimized -e $M -b $b -g 8 --prompt-len 70 --warmup 0 -q ${MEMCHECK_FLAGS:-} >"$LOG/memcheck_b$b.txt" 2>&1
  echo "memcheck ${MEMCHECK_FLAGS:-} B=$b rc=$? $(grep -E 'ERROR SUMMARY' "$LOG/memcheck_b$b.txt")" | tee -a "$T"
  timeout 60 $N/profile -e $M -b $b --steps 16 --builtin --prompt-len 256 ${MEMCHECK_FLAGS:-} >"$LOG/builtin_b$b.txt" 2>&1
  echo "builtin B=$b rc=$?"; grep -E "us/call|ms/step" "$LOG/builtin_b$b.txt" | tee -a "$T"
done
if [ -n "${NCU:-}" ]; then  # per-kernel duration, occupancy and stalls of layer 0's links and the logits, v2
  for b in 1 16; do
    for sel in "--launch-count 6" "--kernel-name regex:LinkEpiE4 --launch-count 1"; do
      timeout 150 ncu --clock-control none --nvtx --nvtx-include 'decode@MEASURE/' $sel --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats $N/profile -e $M -b $b --steps 1 --warmup 4 --prompt-len 256 -q --short-links >>"$LOG/ncu_b$b.txt" 2>&1
    done
    echo "ncu B=$b rc=$?"; grep -E "^  [a-z_].*\(|Duration|DRAM Throughput|Registers Per|Achieved Occupancy|Stall Long|Stall Barrier|Stall Wait|Warp Cycles Per Issued" "$LOG/ncu_b$b.txt" | grep -vE "^ *$" | sed -E 's/ +/ /g' | head -90 >"$LOG/ncu_b${b}_short.txt"
  done
fi
if [ -n "${XL:-}" ]; then
  mkrand gpt2-xl mxl.bin
  for b in 1 16; do
    M=mxl.bin GEN=128 REP=3 tm xl_base_b$b $O/optimized -b $b
    M=mxl.bin GEN=128 REP=3 tm xl_v1_b$b $N/optimized -b $b
    M=mxl.bin GEN=128 REP=3 tm xl_v2_b$b $N/optimized -b $b --short-links
  done
fi
if [ -n "${SIZES:-}" ]; then  # optimized (default and v2) vs kvonly on the other GPT-2 sizes, 128 new tokens
  for sz in ${SIZES}; do
    mkrand $sz m_$sz.bin
    for b in 1 16; do
      M=m_$sz.bin GEN=128 REP=3 tm ${sz}_opt_b$b $N/optimized -b $b
      M=m_$sz.bin GEN=128 REP=3 tm ${sz}_v2_b$b $N/optimized -b $b --short-links
      M=m_$sz.bin GEN=128 REP=3 tm ${sz}_kvonly_b$b $N/kvonly -b $b
    done
    rm -f m_$sz.bin
  done
fi
if [ -n "${RACE:-}" ]; then
  for f in ${RACE}; do
    [ "$f" = v1 ] && f=""
    timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $N/optimized -e $M -b 2 -g 3 --prompt-len 1 --warmup 0 -q $f >"$LOG/racecheck$f.txt" 2>&1
    echo "racecheck optimized $f B=2 rc=$? $(grep -E 'SUMMARY' "$LOG/racecheck$f.txt")" | tee -a "$T"
  done
fi
[ -z "${GPU_FIRST:-}" ] && gpu_tests
echo "== timing"; cat "$T"
