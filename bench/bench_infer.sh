#!/usr/bin/env bash
# kiln infer throughput on 2 cores, all in one run: 1 worker x 2 threads (the baseline), 2 workers x 1
# thread (one mmap of the weights, a KV cache each), and 1 worker decoding 8 rows per forward pass
# (--batch 8, with 2 and with 1 thread), each as a ratio to the baseline; and the baseline against
# llama.cpp's single-sequence decode (llama-bench tg32, same file, 2 threads) when the peer is built.
# ROWS rows of 32 new tokens (min_tokens = max_tokens) on a random llama (dim 512, 8 layers, 32000
# tokens, f32) with the llama 2 tokenizer; wall time of the whole command (load, prefill, decode).
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
ROWS=${ROWS:-32}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
mkdir -p "$T"
model="$T/serve-llama-f32.gguf"
[ -s "$model" ] || build/bench/make_model "$model" f32 512 8 8 8 1408 32000 1024 --tokenizer "$TOK" >/dev/null
cat "$model" >/dev/null # into the page cache
for i in $(seq "$ROWS"); do
  echo "{\"id\":$i,\"prompt\":\"Story number $i begins\",\"max_tokens\":32,\"min_tokens\":32}"
done > "$T/infer-in.jsonl"

# run FLAGS...: prints generated tokens/s
run() {
  local t0 t1
  t0=$(date +%s.%N)
  build/kiln infer -m "$model" --in "$T/infer-in.jsonl" --out "$T/infer-out.jsonl" "$@" 2>/dev/null
  t1=$(date +%s.%N)
  awk -v n=$((ROWS * 32)) -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

base=$(run --workers 1 --threads 2)
two=$(run --workers 2 --threads 1)
batch2=$(run --batch 8 --threads 2)
batch1=$(run --batch 8 --threads 1)
echo "kiln infer, $ROWS rows x 32 tokens (tokens/s, and the ratio to 1 worker x 2 threads):"
printf "  %-34s %7s tokens/s\n" "1 worker x 2 threads" "$base"
printf "  %-34s %7s tokens/s  %s\n" "2 workers x 1 thread" "$two" "$(ratio "$two" "$base")"
printf "  %-34s %7s tokens/s  %s\n" "1 worker, --batch 8, 2 threads" "$batch2" "$(ratio "$batch2" "$base")"
printf "  %-34s %7s tokens/s  %s\n" "1 worker, --batch 8, 1 thread" "$batch1" "$(ratio "$batch1" "$base")"
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1) || PEER=""
if [ -x "$PEER" ]; then
  tg=$("$PEER" -m "$model" -t 2 -p 0 -n 32 -o jsonl 2>/dev/null | tail -n 1 | grep -o '"avg_ts": [0-9.]*' | awk '{printf "%.1f", $2}')
  echo "  llama.cpp decode of one sequence (tg32, 2 threads): $tg tokens/s; 1 worker x 2 threads / llama.cpp:" \
    "$(ratio "$base" "$tg"), --batch 8 / llama.cpp: $(ratio "$batch2" "$tg")"
else
  echo "  llama.cpp peer not available: kiln figures only"
fi
