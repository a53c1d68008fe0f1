#!/usr/bin/env bash
# kiln infer throughput on 2 cores: 1 worker x 2 threads, 2 workers x 1 thread (one mmap of the weights,
# a KV cache each), and 1 worker decoding 8 rows per forward pass (--batch 8). ROWS rows of 32 new
# tokens on a random llama (dim 512, 8 layers, 32000 tokens, f32) with the llama 2 tokenizer.
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
ROWS=${ROWS:-32}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
mkdir -p "$T"
model="$T/serve-llama-f32.gguf"
[ -s "$model" ] || build/bench/make_model "$model" f32 512 8 8 8 1408 32000 1024 --tokenizer "$TOK" >/dev/null
for i in $(seq "$ROWS"); do
  echo "{\"id\":$i,\"prompt\":\"Story number $i begins\",\"max_tokens\":32,\"min_tokens\":32}"
done > "$T/infer-in.jsonl"

run() { # label, flags
  local t0 t1
  t0=$(date +%s.%N)
  build/kiln infer -m "$model" --in "$T/infer-in.jsonl" --out "$T/infer-out.jsonl" "${@:2}" 2>/dev/null
  t1=$(date +%s.%N)
  awk -v l="$1" -v n=$((ROWS * 32)) -v a="$t0" -v b="$t1" 'BEGIN { printf "  %-28s %7.1f tokens/s\n", l, n / (b - a) }'
}
echo "kiln infer, $ROWS rows x 32 tokens:"
run "1 worker x 2 threads" --workers 1 --threads 2
run "2 workers x 1 thread" --workers 2 --threads 1
run "1 worker, --batch 8, 2 threads" --batch 8 --threads 2
run "1 worker, --batch 8, 1 thread" --batch 8 --threads 1
