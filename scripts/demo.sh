#!/usr/bin/env bash
# The main job on the built-in default: import the real pretrained stories260K model (llama2.c format)
# into a GGUF file and generate from it. (The trainer issue replaces this with training a byte-level
# C-code model on /usr/include.)
set -eu
cd "$(dirname "$0")/.."
DATA=${KILN_TESTDATA:-../shared/testdata}
MODEL=build/stories260K.gguf
build/kiln convert "$DATA/stories260K/stories260K.bin" --tokenizer "$DATA/stories260K/tok512.bin" -o "$MODEL"
build/kiln info "$MODEL" --no-tensors
echo
echo "== greedy, from BOS:"
build/kiln generate -m "$MODEL" --temp 0 -n 120
echo
echo "== sampled, temperature 0.8, top-p 0.9, prompt 'Once upon a time, a cat':"
build/kiln generate -m "$MODEL" -p "Once upon a time, a cat" --temp 0.8 --top-p 0.9 --seed 7 -n 120
echo
echo "Try: build/kiln generate -m $MODEL -p \"Your prompt\" -n 200"
