#!/usr/bin/env bash
# Long checks of the trainer (for `make check-long`), on the C headers of this machine:
#  1. kill -9 at random moments: a run killed KILLS times (default 3) and resumed each time ends with
#     the same model file, optimizer state and log as the same run left alone (bit for bit);
#  2. learning: after those STEPS (default 300) steps the valid loss is well below the 8 bits/byte of
#     a model that knows nothing (under LEARN_BPB, default 4.5);
#  3. with mpirun available: 30 steps on 2 processes of half the batch log losses within 1e-4 of the
#     single-process run (rounding differs; the data does not).
# Variables: TRAIN_SRC (default /usr/include), STEPS, KILLS, LEARN_BPB, CHECK_DIR (default build/check-long-train).
set -eu
cd "$(dirname "$0")/.."
SRC=${TRAIN_SRC:-/usr/include}
STEPS=${STEPS:-300}
KILLS=${KILLS:-3}
LEARN_BPB=${LEARN_BPB:-4.5}
DIR=${CHECK_DIR:-build/check-long-train}
KILN=build/kiln
[ -x $KILN ] || make -s build/kiln
rm -rf "$DIR"
mkdir -p "$DIR"
# a small model so that the check takes minutes: 2 layers, dim 128
FLAGS="--layers 2 --dim 128 --heads 4 --ctx 128 --batch 8 --steps $STEPS --save-every 10 --eval-every 100 --threads 2 --quiet"

$KILN corpus "$SRC" -o "$DIR/c.corpus" --quiet
echo "check-long-train: corpus of $SRC ready; training $STEPS steps without interruption"
t0=$(date +%s)
$KILN train --data "$DIR/c.corpus" --out "$DIR/whole" $FLAGS
t1=$(date +%s)
span=$(( t1 - t0 > 2 ? t1 - t0 : 2 ))

echo "check-long-train: the same run, killed $KILLS times at random moments and resumed"
start=1
for k in $(seq "$KILLS"); do
  if [ $start = 1 ]; then $KILN train --data "$DIR/c.corpus" --out "$DIR/killed" $FLAGS & start=0
  else $KILN train --resume "$DIR/killed" --threads 2 --quiet & fi
  pid=$!
  sleep "$(awk -v s="$span" -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.5 + (s / 3.0) * r / 32768 }')"
  if kill -9 $pid 2>/dev/null; then echo "  killed at $(ls "$DIR/killed" | grep -c 'ckpt-.*gguf$') checkpoint(s)"; fi
  wait $pid 2>/dev/null || true
done
if ls "$DIR/killed"/ckpt-*.gguf >/dev/null 2>&1; then
  $KILN train --resume "$DIR/killed" --threads 2 --quiet
else # killed before its first checkpoint: a run folder without one starts over
  $KILN train --data "$DIR/c.corpus" --out "$DIR/killed" $FLAGS
fi

last=$(printf 'ckpt-%08d' "$STEPS")
fail=0
for f in "$last.gguf" "$last.optim"; do
  if cmp -s "$DIR/whole/$f" "$DIR/killed/$f"; then echo "  $f: identical"
  else echo "check-long-train: FAILED: $f differs between the killed and the whole run" >&2; fail=1; fi
done
strip() { sed -E 's/"(tok_s|elapsed_s)":[^,}]*,?//g' "$1"; }
if [ "$(strip "$DIR/whole/log.jsonl")" = "$(strip "$DIR/killed/log.jsonl")" ]; then echo "  log.jsonl: the same losses"
else echo "check-long-train: FAILED: the logs differ" >&2; fail=1; fi

bpb=$(grep '"split":"valid"' "$DIR/whole/log.jsonl" | tail -1 | sed -E 's/.*"bpb":([0-9.]+).*/\1/')
if awk -v b="$bpb" -v t="$LEARN_BPB" 'BEGIN { exit !(b < t) }'; then echo "  learned: valid $bpb bits/byte after $STEPS steps"
else echo "check-long-train: FAILED: valid $bpb bits/byte after $STEPS steps (want < $LEARN_BPB)" >&2; fail=1; fi

if command -v mpirun >/dev/null 2>&1; then
  SHORT="--layers 2 --dim 128 --heads 4 --ctx 128 --steps 30 --log-every 1 --eval-every 30 --quiet"
  $KILN train --data "$DIR/c.corpus" --out "$DIR/one" --batch 8 --threads 2 $SHORT
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe \
    $KILN train --data "$DIR/c.corpus" --out "$DIR/two" --batch 4 --threads 1 $SHORT
  if python3 - "$DIR/one/log.jsonl" "$DIR/two/log.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print("  2 processes x batch 4 against 1 x batch 8, 30 steps: largest relative loss difference %.2g" % worst)
sys.exit(len(a) != len(b) or worst > 1e-4)
EOF
  then :; else echo "check-long-train: FAILED: the 2-process run drifted from the 1-process run" >&2; fail=1; fi
else
  echo "  (mpirun not installed: the data-parallel check is skipped)"
fi

if [ $fail = 0 ]; then echo "check-long-train: OK"; fi
exit $fail
