#!/usr/bin/env bash
# Decode and prefill of the ~110M llama (random weights, ../shared/PEERS.md's shape) in f32 and Q8_0, on
# a quiet machine and beside a competing CPU load (LOAD busy-loop processes, default one per core): kiln
# against llama.cpp compiled for this CPU (../shared/tools/llama-cpp-peer), same file, same threads, same
# conditions, same run. kiln's figures are `kiln generate`'s: a fresh context, prefill of a ~512-token
# prompt, then 128 greedy tokens (32 under load; at most 10 s of them); llama.cpp's are llama-bench's
# prefill of as many tokens and decode of as many after a context of that prompt's length (-d), so
# that both decode at the same depth.
# KILN picks the kiln binary (default build/kiln, to compare builds); THREADS (default: all cores);
# KILN_BENCH_TYPES (default "f32 q8_0").
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
THREADS=${THREADS:-$(nproc)}
LOAD=${LOAD:-$(nproc)}
KILN=${KILN:-build/kiln}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
mkdir -p "$T"
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1) || PEER=""
[ -x "$PEER" ] || { echo "llama.cpp peer not available: kiln figures only"; PEER=""; }

field() { grep -o "\"$2\": [0-9.]*" <<<"$1" | head -n 1 | awk '{print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
stat() { grep -o "$2 [0-9.]* tok/s" <<<"$1" | head -n 1 | awk '{print $2}'; }

busy=()
stop_load() {
  [ ${#busy[@]} -gt 0 ] && kill "${busy[@]}" 2>/dev/null
  busy=()
}
trap stop_load EXIT
start_load() {
  for _ in $(seq "$LOAD"); do
    bash -c 'while :; do :; done' &
    busy+=($!)
  done
  sleep 1
}

prompt=$(for _ in $(seq 52); do printf 'the quick brown fox jumps over the lazy dog. '; done)

# One line of figures for MODEL in the current conditions (NAME), decoding N tokens.
measure() {
  local model=$1 n=$3 out pp tg
  out=$(OMP_NUM_THREADS=$THREADS "$KILN" generate -m "$model" -p "$prompt" -n "$n" --min-new-tokens "$n" --temp 0 \
    --max-time 10 --threads "$THREADS" 2>&1 >/dev/null | grep '^\[kiln\]')
  kpp=$(stat "$out" prefill); ktg=$(stat "$out" decode)
  np=$(grep -o 'prompt [0-9]* tokens' <<<"$out" | awk '{print $2}')
  lpp=0; ltg=0
  if [ -n "$PEER" ]; then
    pp=$("$PEER" -m "$model" -t "$THREADS" -p "$np" -n 0 -r 2 -o jsonl 2>/dev/null | tail -n 1)
    tg=$("$PEER" -m "$model" -t "$THREADS" -p 0 -n "$n" -d "$np" -r 2 -o jsonl 2>/dev/null | tail -n 1)
    lpp=$(field "$pp" avg_ts); ltg=$(field "$tg" avg_ts)
  fi
  printf '   %-8s decode kiln %7.1f llama.cpp %7.1f tok/s = %s   prefill kiln %7.1f llama.cpp %7.1f tok/s = %s\n' \
    "$2" "$ktg" "$ltg" "$(ratio "$ktg" "$ltg")" "$kpp" "$lpp" "$(ratio "$kpp" "$lpp")"
}

echo "kiln: $KILN, $THREADS threads; load: $LOAD busy processes"
for type in ${KILN_BENCH_TYPES:-f32 q8_0}; do
  f32="$T/llama110m-f32.gguf"
  [ -s "$f32" ] || build/bench/make_model "$f32" f32 --tokenizer "$TOK"
  model="$T/llama110m-$type.gguf"
  [ -s "$model" ] || build/kiln quantize "$f32" "$model" --type "$type" --quiet
  cat "$model" > /dev/null # into the page cache
  echo "-- $type (kiln / llama.cpp)"
  measure "$model" quiet 128
  start_load
  measure "$model" loaded 32
  stop_load
done
