# Sourced by the device_*.sh scripts: the setup every GPU call shares, and the driver calls they
# time with. Nothing here reads ##GPT2D lines: the driver parses them (gpt2driver ... -o jsonl / --json).
#   FINAL ($OUT of the device tool) gets logs.tgz of $OUT=/tmp/gpt2d_logs at exit (and results/).
set -uo pipefail
FINAL=${OUT:-/tmp/gpt2d_out}; OUT=/tmp/gpt2d_logs; mkdir -p "$OUT" "$FINAL"
trap 'cp -r results "$OUT/" 2>/dev/null; tar czf "$FINAL/logs.tgz" -C "$OUT" .' EXIT
export PYTHONUNBUFFERED=1 GPT2DRIVER_HOME=${GPT2DRIVER_HOME:-/tmp/gpt2d_home}
[ -f .data/gpt2_tokenizer.bin ] && export GPT2DRIVER_TOKENIZER=$PWD/.data/gpt2_tokenizer.bin
G="python3 -m gpt2driver"  # the python that has torch, click, pandas (a bare `gpt2driver` may be another pip's)
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
T="$OUT/timing.txt"; : > "$T"

install_driver() {
  python3 -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
}

# tm LABEL COMPARE-ARGS...: one `gpt2driver compare` (one variant, one B), its median step and
# tokens/s as one line of $T, e.g. tm base_b1 --bin-dir /tmp/base/build/sm90_bf16 --variants optimized -b 1 -n 512
tm() {
  local label=$1; shift
  timeout "${TM_TIMEOUT:-150}" $G compare --cc "$GPU_CC" --warmup 1 --repeat "${REPEAT:-5}" -o jsonl "$@" \
      >"$OUT/t_$label.jsonl" 2>"$OUT/t_$label.err"
  python3 - "$label" "$OUT/t_$label.jsonl" "$OUT/t_$label.err" <<'PY' | tee -a "$T"
import json, sys
label, rows, err = sys.argv[1], open(sys.argv[2]).read().splitlines(), open(sys.argv[3]).read().strip()
for r in (json.loads(l) for l in rows if l.startswith("{")):
    if r["status"] == "ok":
        print(f"{label} {r['variant']} B={r['batch']} step_ms={r['step_ms']:.4f} "
              f"prefill_ms={r['prefill_ms']:.3f} tokens_per_s={r['tokens_per_s_median']:.1f}")
    else:
        print(f"{label} FAILED: {r['error']}")
if not rows:
    print(f"{label} FAILED: {err.splitlines()[-1] if err else 'no output'}")
PY
}

# same_tokens LABEL BIN_DIR_A BIN_DIR_B RUN-ARGS...: the greedy tokens of two builds, compared
same_tokens() {
  local label=$1 a=$2 b=$3; shift 3
  $G run --cc "$GPU_CC" --bin-dir "$a" --json "$@" >"$OUT/tok_${label}_a.json" 2>/dev/null
  $G run --cc "$GPU_CC" --bin-dir "$b" --json "$@" >"$OUT/tok_${label}_b.json" 2>/dev/null
  python3 - "$label" "$OUT/tok_${label}_a.json" "$OUT/tok_${label}_b.json" <<'PY'
import json, sys
label, a, b = sys.argv[1], *(json.load(open(p))["tokens"] for p in sys.argv[2:])
print(f"{label} greedy tokens {'equal' if a == b else 'DIFFER'} ({len(b)} rows)")
PY
}
