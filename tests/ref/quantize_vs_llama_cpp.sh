#!/usr/bin/env bash
# `kiln quantize` against llama.cpp's llama-quantize (built for this CPU from the llama.cpp source that
# ../shared/tools/llama-cpp-peer keeps, in the same cache) on the random 110M llama (bench/make_model):
# for q8_0, q4_0 and q4_k_m both files must hold the same tensors with the same types and the same bytes
# (llama.cpp's per-tensor choices of q4_k_m included). Run by scripts/check-long.sh; needs build/ (make).
set -eu
cd "$(dirname "$0")/../.."
T=${BENCH_TMP:-/tmp/kiln-bench}
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1)
BUILD_DIR=$(dirname "$(dirname "$PEER")")
[ -x "$BUILD_DIR/bin/llama-quantize" ] || cmake --build "$BUILD_DIR" --target llama-quantize -j "$(nproc)" >/dev/null
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc -Iinclude tests/ref/gguf_same_tensors.c src/format/gguf.c src/base/file.c \
  src/base/error.c -o "$W/same"
mkdir -p "$T"
f32="$T/llama110m-f32.gguf"
[ -s "$f32" ] || build/bench/make_model "$f32" f32 --tokenizer ../shared/testdata/llama2-tokenizer/tokenizer.bin
status=0
for qt in q8_0 q4_0 q4_k_m; do
  "$BUILD_DIR/bin/llama-quantize" "$f32" "$W/llama.gguf" "${qt^^}" >/dev/null 2>&1
  build/kiln quantize "$f32" "$W/kiln.gguf" --type "$qt" --quiet 2>/dev/null
  echo -n "quantize $qt, kiln against llama-quantize: "
  "$W/same" "$W/kiln.gguf" "$W/llama.gguf" || status=1
done
exit $status
