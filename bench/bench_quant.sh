#!/usr/bin/env bash
# Prefill and decode of the ~110M llama (random weights, ../shared/PEERS.md's shape) quantized by
# `kiln quantize` to Q8_0 and Q4_0 (Q4_K_M with KILN_BENCH_QTYPES="q8_0 q4_0 q4_k_m"): kiln against
# llama.cpp compiled for this CPU (../shared/tools/llama-cpp-peer) on the same files, same threads, same
# run (pp512 and tg128, as llama-bench reports them; kiln's prefill on a warmed context as llama-bench's,
# and on a new one, each the best of 3), and kiln's decode as a fraction of the
# memory-bandwidth limit measured in the same run (bandwidth.h: weight bytes per token x tok/s over the
# read bandwidth, the higher of two probes, one before the model runs and one right after its decode:
# this host's bandwidth drifts by 2x over minutes, and the higher probe is the harder limit). THREADS (default: all cores).
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

f32="$T/llama110m-f32.gguf"
[ -s "$f32" ] || build/bench/make_model "$f32" f32 --tokenizer "$TOK"
for qt in ${KILN_BENCH_QTYPES:-q8_0 q4_0}; do
  model="$T/llama110m-$qt.gguf"
  [ -s "$model" ] || build/kiln quantize "$f32" "$model" --type "$qt" --quiet
  cat "$model" > /dev/null # into the page cache
  out=$(OMP_NUM_THREADS=$THREADS build/bench/bench_model "$model" --quick)
  echo "-- $qt: kiln"
  sed 's/^/   /' <<<"$out"
  awk -v b="$(kv "$out" weight_bytes_per_token)" -v t="$(kv "$out" decode_after_16_tps)" -v bw="$(kv "$out" read_bandwidth_GBps)" \
    -v bw2="$(kv "$out" read_bandwidth_after_decode_GBps)" \
    'BEGIN { if (bw2 > bw) bw = bw2; printf "   decode reads %.1f MB/token x %.1f tok/s = %.1f GB/s = %.0f%% of the read bandwidth (%.1f GB/s)\n", b / 1e6, t, b * t / 1e9, 100 * b * t / 1e9 / bw, bw }'
  echo "   a pass over 5 tokens (a speculative target's check of 4 drafted ones) costs $(kv "$out" pass_5_tokens_over_1)x one token, 9 tokens $(kv "$out" pass_9_tokens_over_1)x"
  [ -n "$PEER" ] || continue
  pp=$("$PEER" -m "$model" -t "$THREADS" -p 512 -n 0 -o jsonl 2>/dev/null | tail -n 1)
  tg=$("$PEER" -m "$model" -t "$THREADS" -p 0 -n 128 -o jsonl 2>/dev/null | tail -n 1)
  lpp=$(field "$pp" avg_ts); ltg=$(field "$tg" avg_ts)
  echo "-- $qt: llama.cpp (same file, $THREADS threads): prefill pp512 $lpp tok/s, decode tg128 $ltg tok/s"
  echo "   kiln / llama.cpp: prefill $(ratio "$(kv "$out" prefill512_tps)" "$lpp") (on a new context $(ratio "$(kv "$out" prefill512_fresh_context_tps)" "$lpp")), decode $(ratio "$(kv "$out" decode_after_16_tps)" "$ltg")"
done
