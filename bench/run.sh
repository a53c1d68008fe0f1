#!/usr/bin/env bash
# Runs every benchmark: each build/bench/bench_* binary and each bench/bench_*.sh script. Each prints its
# figures as ratios against a peer measured in the same run. BENCH=NAME runs only those whose name
# contains NAME. Big temporary files go under $BENCH_TMP (default /tmp/kiln-bench).
set -u
cd "$(dirname "$0")/.."
export BENCH_TMP=${BENCH_TMP:-/tmp/kiln-bench}
mkdir -p "$BENCH_TMP"
status=0
for b in build/bench/bench_* bench/bench_*.sh; do
  [ -x "$b" ] || continue
  case "$b" in *"${BENCH:-}"*) ;; *) continue ;; esac
  echo "== $b"
  "$b" || { echo "!! $b failed"; status=1; }
done
exit $status
