#!/usr/bin/env bash
# `kiln quantize` against llama.cpp's llama-quantize (built for this CPU in ../shared/tools/llama-cpp-peer's
# cache) on the same f32 file, the random 110M llama (537 MB), same threads, best of 2 each: seconds and
# kiln's speed as a multiple of llama-quantize's. Both write the same tensors bit for bit
# (tests/ref/quantize_vs_llama_cpp.sh); kiln also fsyncs its output before renaming it into place. THREADS
# (default: all cores).
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$T"
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1) || PEER=""
[ -x "$PEER" ] || { echo "llama.cpp peer not available"; exit 0; }
BUILD_DIR=$(dirname "$(dirname "$PEER")")
[ -x "$BUILD_DIR/bin/llama-quantize" ] || cmake --build "$BUILD_DIR" --target llama-quantize -j "$(nproc)" >/dev/null
f32="$T/llama110m-f32.gguf"
[ -s "$f32" ] || build/bench/make_model "$f32" f32 --tokenizer ../shared/testdata/llama2-tokenizer/tokenizer.bin
cat "$f32" >/dev/null # into the page cache
best() { # best wall seconds of 2 runs of the command
  local b=""
  for _ in 1 2; do
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    b=$(awk -v b="$b" -v t="$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')" 'BEGIN { print (b == "" || t < b) ? t : b }')
  done
  echo "$b"
}
echo "-- quantize the 110M llama (f32, $(($(stat -c %s "$f32") / 1000000)) MB), $THREADS threads, best of 2"
for qt in q8_0 q4_0 q4_k_m; do
  k=$(OMP_NUM_THREADS=$THREADS best build/kiln quantize "$f32" "$T/quantize-kiln.gguf" --type "$qt" --quiet)
  l=$(best "$BUILD_DIR/bin/llama-quantize" "$f32" "$T/quantize-llama.gguf" "${qt^^}" "$THREADS")
  awk -v q="$qt" -v k="$k" -v l="$l" 'BEGIN { printf "   %-7s kiln %.2f s, llama-quantize %.2f s: kiln %.2fx\n", q, k, l, l / k }'
done
rm -f "$T/quantize-kiln.gguf" "$T/quantize-llama.gguf"
