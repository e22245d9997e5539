#!/usr/bin/env bash
# One call on a machine with several GPUs (nvidia-h200-x2): the default sweep config on GPU 0 alone, then with
# --gpus all, and a per-point comparison (tokens/s one GPU vs all, which GPU ran it, start/end times overlapping).
# Logs in $OUT/logs.tgz.
. "$(dirname "$0")/common.sh"
rm -rf build results
install_driver
nvidia-smi -L
$G build -j 16 >"$OUT/build.txt" 2>&1; echo "build rc=$?"
CFG=${CFG:-configs/gpt2_optim.yaml}
SECONDS=0; timeout 280 $G sweep --config $CFG --gpus 0 --out results/one >"$OUT/sweep_one.txt" 2>"$OUT/sweep_one.err"; echo "sweep --gpus 0 rc=$? in ${SECONDS}s"
SECONDS=0; timeout 200 $G sweep --config $CFG --gpus all --out results/all >"$OUT/sweep_all.txt" 2>"$OUT/sweep_all.err"; echo "sweep --gpus all rc=$? in ${SECONDS}s"
tail -3 "$OUT/sweep_all.err"
python3 - <<'PY'
import pandas as pd
one = pd.read_csv("results/one/results.csv"); allg = pd.read_csv("results/all/results.csv")
key = ["variant", "ablate", "batch", "gen", "prompt_len", "precision"]
m = one.merge(allg, on=key, suffixes=("_one", "_all"))
m["ratio"] = m["tokens_per_s_median_all"] / m["tokens_per_s_median_one"]
cols = key[:3] + ["tokens_per_s_median_one", "gpu_index_one", "tokens_per_s_median_all", "gpu_index_all", "gpu_all", "ratio"]
print(m[cols].to_string(index=False))
print("GPUs used with --gpus all:", sorted(allg["gpu_index"].dropna().unique().tolist()))
print("ratio all/one: min %.4f max %.4f" % (m["ratio"].min(), m["ratio"].max()))
PY
echo "== sweep --gpus all table"; tail -16 "$OUT/sweep_all.txt"
