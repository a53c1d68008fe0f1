#!/usr/bin/env bash
# Prefill and decode of a ~110M llama (random weights, ../shared/PEERS.md's shape) in f32, bf16 and f16:
# kiln against llama.cpp compiled for this CPU (../shared/tools/llama-cpp-peer), same file, same threads,
# same run; and kiln's decode as a fraction of the memory-bandwidth limit measured in the same run.
# KILN_BENCH_TYPES="f32 bf16 f16" picks the types; THREADS (default: all cores).
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
THREADS=${THREADS:-$(nproc)}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
mkdir -p "$T"
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1) || PEER=""
[ -x "$PEER" ] || { echo "llama.cpp peer not available: kiln figures only"; PEER=""; }

field() { grep -o "\"$2\": [0-9.]*" <<<"$1" | head -n 1 | awk '{print $2}'; }
kv() { awk -v k="$2" '$1 == k {print $2}' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

for type in ${KILN_BENCH_TYPES:-f32 bf16 f16}; do
  model="$T/llama110m-$type.gguf"
  [ -s "$model" ] || build/bench/make_model "$model" "$type" --tokenizer "$TOK"
  cat "$model" > /dev/null # into the page cache
  out=$(OMP_NUM_THREADS=$THREADS build/bench/bench_model "$model")
  echo "-- $type: kiln"
  sed 's/^/   /' <<<"$out"
  [ -n "$PEER" ] || continue
  pp=$("$PEER" -m "$model" -t "$THREADS" -p 512 -n 0 -o jsonl 2>/dev/null | tail -n 1)
  tg=$("$PEER" -m "$model" -t "$THREADS" -p 0 -n 64 -o jsonl 2>/dev/null | tail -n 1)
  tgd=$("$PEER" -m "$model" -t "$THREADS" -p 0 -n 64 -d 1024 -o jsonl 2>/dev/null | tail -n 1)
  lpp=$(field "$pp" avg_ts); ltg=$(field "$tg" avg_ts); ltgd=$(field "$tgd" avg_ts)
  echo "-- $type: llama.cpp (same file, $THREADS threads): prefill512 $lpp tok/s, decode $ltg tok/s, decode after 1024 $ltgd tok/s"
  echo "   kiln / llama.cpp: prefill $(ratio "$(kv "$out" prefill512_tps)" "$lpp"), decode $(ratio "$(kv "$out" decode_after_16_tps)" "$ltg"), decode after 1024 $(ratio "$(kv "$out" decode_after_1024_tps)" "$ltgd")"
done
