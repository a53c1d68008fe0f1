#!/usr/bin/env bash
# Greedy tokens, 64 steps, kiln against llama.cpp (compiled for this CPU, ../shared/tools/llama-cpp-peer)
# on the random 110M llama (bench/bench_quant.sh's files) in f32, Q8_0 and Q4_0, for four prompts; and,
# as the noise floor of the quantized runs, kiln's AVX2 kernels against its AVX-512 ones: both quantize
# the activations identically and differ only in the order of float sums. For each pair it prints the
# first step where the tokens part, with both top-2 margins there, and the largest top-logit difference
# before it. Also llama.cpp against itself (prompt as one batch vs one token per call), which parts nowhere:
# llama.cpp's float order does not depend on the batch.
# With TRAINED.gguf (a byte-level model from kiln train, e.g. make demo's RUN/latest.gguf) the same runs on
# C prompts with it in f32, Q8_0 and Q4_0: a trained model's top-2 margins are not the near-ties of random
# weights, so there the comparison tests the arithmetic rather than the float order, and the script
# exits 1 if kiln and llama.cpp part on any of them. RANDOM_MODEL=0 skips the random model.
# Needs build/libkiln.a (make) and the peer.
#     tests/ref/quant_greedy_vs_llama_cpp.sh [N_STEPS [TRAINED.gguf]]
set -eu
cd "$(dirname "$0")/../.."
N=${1:-64}
TRAINED=${2:-}
T=${BENCH_TMP:-/tmp/kiln-bench}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
PEER=$(../shared/tools/llama-cpp-peer 2>/dev/null | tail -n 1)
LIBS=$(dirname "$PEER")
SRC=$(../shared/tools/llama-cpp-peer --print-src 2>/dev/null | tail -n 1)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
gcc -O2 tests/ref/quant_greedy_llama_cpp.c -I"$SRC/include" -I"$SRC/ggml/include" -L"$LIBS" -lllama -lggml \
  -lggml-base -Wl,-rpath,"$LIBS" -o "$W/llama"
gcc -O2 -std=c11 -fopenmp -Iinclude tests/ref/quant_greedy_kiln.c build/libkiln.a -o "$W/kiln" \
  -lopenblas -ljansson -lpcre2-8 -lxxhash -lmicrohttpd -lm -lpthread

f32="$T/llama110m-f32.gguf"
if [ "${RANDOM_MODEL:-1}" = 1 ] && [ ! -s "$f32" ]; then build/bench/make_model "$f32" f32 --tokenizer "$TOK"; fi
compare() { # NAME A B: first divergence of two runs' outputs; kiln against llama.cpp parting marks $W/parted
  paste -d' ' "$2" "$3" | awk -v name="$1" -v n="$N" -v mark="$W/parted" '
    $1 != $5 { printf "  %-22s part at step %d: %d (margin %.4f) vs %d (margin %.4f); before it top logits differed by at most %.2g\n",
               name, NR - 1, $1, $3, $5, $7, worst; parted = 1; if (name == "kiln vs llama.cpp") printf "" > mark; exit }
    { d = $4 - $8; if (d < 0) d = -d; if (d > worst) worst = d }
    END { if (!parted) printf "  %-22s all %d steps agree; top logits differed by at most %.2g\n", name, n, worst }'
}
run_prompts() { # QT MODEL PROMPT...
  local qt=$1 model=$2
  shift 2
  echo "-- $qt ($model)"
  for p in "$@"; do
    echo " \"$p\""
    ids=$("$W/kiln" "$model" -t "$p")
    "$W/llama" "$model" "$N" $ids >"$W/l"
    "$W/kiln" "$model" "$N" $ids >"$W/k"
    compare "kiln vs llama.cpp" "$W/k" "$W/l"
    [ "$qt" = f32 ] && continue
    LLAMA_PROMPT_TOKENWISE=1 "$W/llama" "$model" "$N" $ids >"$W/l1"
    compare "llama.cpp vs itself" "$W/l1" "$W/l"
    KILN_ISA=avx2 "$W/kiln" "$model" "$N" $ids >"$W/k2"
    compare "kiln avx2 vs avx512" "$W/k2" "$W/k"
  done
}
for qt in f32 q8_0 q4_0; do
  [ "${RANDOM_MODEL:-1}" = 1 ] || break
  model="$T/llama110m-$qt.gguf"
  [ -s "$model" ] || build/kiln quantize "$f32" "$model" --type "$qt" --quiet
  run_prompts "$qt" "$model" "Once upon a time" "The meaning of life is" "In a small village," "def fibonacci(n):"
done
[ -n "$TRAINED" ] || exit 0
rm -f "$W/parted"
for qt in f32 q8_0 q4_0; do
  model="$TRAINED"
  if [ "$qt" != f32 ]; then
    model="$W/trained-$qt.gguf"
    build/kiln quantize "$TRAINED" "$model" --type "$qt" --quiet
  fi
  run_prompts "$qt" "$model" "static int" "#include <linux/" "	for (i = 0; i < n; i++) {" "struct device *dev = " \
    "	if (!ptr)" "/* Copyright (C) 2005 "
done
[ ! -e "$W/parted" ] # kiln and llama.cpp agree on every prompt of the trained model
