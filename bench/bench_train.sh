#!/usr/bin/env bash
# Training throughput: kiln against PyTorch (Debian's python3-torch with OpenBLAS) on the same
# byte-level GPT-2 (6 layers, dim 384, 6 heads, T=256, B=8: 10.8M parameters), the same threads, in
# the same run. PyTorch runs as ../shared/PEERS.md says it is fastest here (torch.set_num_threads(1),
# OpenBLAS on the cores), once with the machine's environment as it is and once with
# OPENBLAS_CORETYPE=SkylakeX (OpenBLAS's AVX-512 kernels, which kiln picks for itself): the ratio is
# against the faster of the two. Also prints the fraction of the fp32 peak kiln reaches (the peak: an
# FMA loop on one core in the same process, times the threads) and peak resident memory.
#
# The machines are shared: a figure taken while other processes run is low for every peer alike, so
# read the ratios. cpu_s_per_step near threads x step_s means the cores were ours. The peers take turns
# for TRAIN_ROUNDS rounds and each keeps its fastest round, so that a burst of noise during one of them
# does not decide the ratio.
# Variables: TRAIN_STEPS (default 10), TRAIN_THREADS (default: all cores), TRAIN_ARCH (gpt2),
# TRAIN_ROUNDS (default 3), TRAIN_BASELINE (a train_step binary built from other sources, say a copy of
# build/bench/train_step made before a change: it takes its turn in every round and is reported
# beside kiln, so before and after are measured in the same run).
set -eu
cd "$(dirname "$0")/.."
STEPS=${TRAIN_STEPS:-10}
THREADS=${TRAIN_THREADS:-$(nproc)}
ARCH=${TRAIN_ARCH:-gpt2}
ROUNDS=${TRAIN_ROUNDS:-3}
CFG="--layers 6 --dim 384 --heads 6 --ctx 256 --batch 8"
make -s build/bench/train_step
PY=/usr/bin/python3
if ! $PY -c "import torch" 2>/dev/null; then
  echo "bench_train: PyTorch is missing (apt-get install -y python3-torch libopenblas0-pthread)" >&2
  exit 1
fi

faster() { # JSON_A JSON_B: the one with more tokens/s (A when B is empty)
  [ -z "$2" ] && { echo "$1"; return; }
  $PY -c 'import json, sys; a, b = (json.loads(x) for x in sys.argv[1:]); print(sys.argv[1] if a["tok_s"] >= b["tok_s"] else sys.argv[2])' "$1" "$2"
}
BASELINE=${TRAIN_BASELINE:-}
kiln="" base="" torch_env="" torch_avx=""
for round in $(seq "$ROUNDS"); do
  k=$(OMP_NUM_THREADS=$THREADS build/bench/train_step --arch "$ARCH" $CFG --steps "$STEPS" --threads "$THREADS")
  echo "round $round kiln:              $k"
  if [ -n "$BASELINE" ]; then
    kb=$(OMP_NUM_THREADS=$THREADS "$BASELINE" --arch "$ARCH" $CFG --steps "$STEPS" --threads "$THREADS")
    echo "round $round kiln baseline:     $kb"
    base=$(faster "$kb" "$base")
  fi
  te=$($PY bench/bench_train.py $CFG --steps "$STEPS")
  echo "round $round pytorch (env):     $te"
  ta=$(OPENBLAS_CORETYPE=SkylakeX $PY bench/bench_train.py $CFG --steps "$STEPS")
  echo "round $round pytorch (AVX-512): $ta"
  kiln=$(faster "$k" "$kiln") torch_env=$(faster "$te" "$torch_env") torch_avx=$(faster "$ta" "$torch_avx")
done

$PY - "$kiln" "$torch_env" "$torch_avx" "$THREADS" "${OPENBLAS_CORETYPE:-unset}" "$ARCH" "$base" <<'EOF'
import json, sys
k, te, ta = (json.loads(a) for a in sys.argv[1:4])
kb = json.loads(sys.argv[7]) if sys.argv[7] else None
best = max(te, ta, key=lambda r: r["tok_s"])
print("best of each over the rounds:")
print("training %s (%.1fM parameters), %s threads: kiln %.0f tok/s; PyTorch %.0f tok/s (OPENBLAS_CORETYPE=%s), "
      "%.0f tok/s (SkylakeX)" % (sys.argv[6], k["params"] / 1e6, sys.argv[4], k["tok_s"], te["tok_s"], sys.argv[5],
                                  ta["tok_s"]))
print("kiln / best PyTorch: %.2fx   (target 2x)" % (k["tok_s"] / best["tok_s"]))
if kb:
    print("baseline %.0f tok/s = %.2fx PyTorch; kiln / baseline: %.3fx (per CPU-second %.3fx)"
          % (kb["tok_s"], kb["tok_s"] / best["tok_s"], k["tok_s"] / kb["tok_s"],
             (k["tok_s"] * k["step_s"] / k["cpu_s_per_step"]) / (kb["tok_s"] * kb["step_s"] / kb["cpu_s_per_step"])))
print("kiln: %.1f GFLOP/s = %.0f%% of the fp32 peak (%.0f GFLOP/s = %s x %.0f, target 40%%); per CPU-second %.0f%%"
      % (k["gflops"], 100 * k["peak_fraction"], k["peak_gflops"], sys.argv[4], k["core_peak_gflops"],
         100 * k["cpu_peak_fraction"]))
print("per CPU-second (all threads' time, a figure other processes disturb less): kiln %.0f tok, PyTorch %.0f tok "
      "(%.2fx)" % (k["tok_s"] * k["step_s"] / k["cpu_s_per_step"], best["tok_s"] * best["step_s"] / best["cpu_s_per_step"],
                   (k["tok_s"] * k["step_s"] / k["cpu_s_per_step"]) / (best["tok_s"] * best["step_s"] / best["cpu_s_per_step"])))
print("peak resident memory: kiln %.0f MB, PyTorch %.0f MB" % (k["peak_rss_mb"], best["peak_rss_mb"]))
EOF
