#!/usr/bin/env bash
# Long checks (`make check-long`): fuzzes the parsers of untrusted files with libFuzzer under ASan and
# UBSan for FUZZ_SECONDS each (default 60): the GGUF reader, the safetensors header, Hugging Face
# config.json, and tokenizer.json. Each fuzzer is built from the library sources it needs (not libkiln.a,
# which is not instrumented) into build/fuzz/. Corpora start from the committed files of that format and
# those the tests write, and grow in build/fuzz/corpus-NAME/ from run to run. Fails on any crash, leak,
# undefined behaviour or input slower than 10 s; the input that did it is left in build/fuzz/. Then checks
# that llama.cpp (npm node-llama-cpp) runs stories260K converted by kiln to llama2.c's greedy text, that
# kiln quantize writes llama-quantize's tensors bit for bit (tests/ref/quantize_vs_llama_cpp.sh), runs
# the trainer's long checks (scripts/check-long-train.sh: kill -9 and resume, learning, mpirun), and
# checks that the greedy tokens of the model they trained agree with llama.cpp's, quantized or not
# (tests/ref/quant_greedy_vs_llama_cpp.sh).
set -eu
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
mkdir -p "$OUT"
SAN="-std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
     -fno-omit-frame-pointer"

# Seeds from the tests: the GGUF files they write (under build/tmp/gguf_*) and the Hugging Face ones.
if [ -x build/kiln-test ]; then build/kiln-test gguf >/dev/null || true; fi

# fuzz NAME "SOURCES" "LIBS" SEED_FILE...
fuzz() {
  local name=$1 srcs=$2 libs=$3
  shift 3
  local corpus=$OUT/corpus-$name log=$OUT/fuzz_$name.log
  mkdir -p "$corpus"
  # shellcheck disable=SC2086
  clang $SAN $srcs $libs -lm -o "$OUT/fuzz_$name"
  for f in "$@"; do
    [ -f "$f" ] && cp "$f" "$corpus/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
  done
  echo "check-long: fuzzing $name for ${FUZZ_SECONDS}s from $(ls "$corpus" | wc -l) corpus files"
  set +e
  "$OUT/fuzz_$name" -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
                    -artifact_prefix="$OUT/$name-" "$corpus" >"$log" 2>&1
  local rc=$?
  set -e
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
    echo "check-long: FAILED: fuzz_$name crashed after ${execs:-?} execs (exit $rc); log: $log" >&2
    exit 1
  fi
  echo "check-long: OK: fuzz_$name ran ${execs:-?} execs in ${FUZZ_SECONDS}s, no crash (corpus now $(ls "$corpus" | wc -l) files)"
}

BASE="src/base/error.c src/base/file.c"
fuzz gguf "fuzz/fuzz_gguf.c $BASE src/format/gguf.c" "" tests/golden/*.gguf build/tmp/gguf_*/*.gguf
fuzz safetensors "fuzz/fuzz_safetensors.c $BASE src/format/safetensors.c" "-ljansson" \
     tests/golden/hf/*/*.safetensors ../shared/testdata/tiny-gpt2/model.safetensors
fuzz hf_config "fuzz/fuzz_hf_config.c $BASE src/format/hf_config.c src/format/model_file.c src/format/gguf.c
     src/model/config.c src/model/rope.c src/kernels/ref.c src/kernels/quant_ref.c" "-ljansson" tests/golden/hf/*/config.json ../shared/testdata/tiny-gpt2/config.json
# A small real tokenizer.json (GPT-2 style) seeds it: the large npm ones would make each run slow.
mkdir -p "$OUT/seed-tokenizer"
cat >"$OUT/seed-tokenizer/tokenizer.json" <<'JSON'
{"added_tokens": [{"id": 7, "content": "<|end|>", "special": true}], "normalizer": null,
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
 "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġa": 4, "Ġab": 5, "c": 6},
           "merges": ["a b", "Ġ a", "Ġa b"]}}
JSON
fuzz tokenizer_json "fuzz/fuzz_tokenizer_json.c $BASE src/tokenizer/bpe.c src/tokenizer/hf_tokenizer.c
     src/tokenizer/sp_model.c src/tokenizer/tokenizer.c src/tokenizer/spm.c" "-ljansson -lpcre2-8 -lxxhash" \
     "$OUT/seed-tokenizer/tokenizer.json"

# llama.cpp reads kiln's GGUF: stories260K converted by kiln gives llama2.c's greedy text in llama.cpp
# (node-llama-cpp's prebuilt binaries, installed outside the repository by scripts/npm-cache.sh).
MODULES=$(scripts/npm-cache.sh llama)
build/kiln convert ../shared/testdata/stories260K/stories260K.bin --tokenizer ../shared/testdata/stories260K/tok512.bin \
  -o "$OUT/stories260K.gguf" 2>/dev/null
NODE_MODULES=$MODULES node tests/ref/llama_cpp_greedy.mjs "$OUT/stories260K.gguf" 200 >"$OUT/llama_cpp_greedy.txt"
if ! cmp -s "$OUT/llama_cpp_greedy.txt" ../shared/testdata/stories260K/expected_greedy_200.txt; then
  echo "check-long: FAILED: llama.cpp's greedy text of kiln's stories260K.gguf differs from llama2.c's ($OUT/llama_cpp_greedy.txt)" >&2
  exit 1
fi
echo "check-long: OK: llama.cpp (node-llama-cpp) runs kiln's stories260K.gguf to llama2.c's greedy text"

# llama.cpp reads kiln's byte-level BPE tokenizer keys: the Qwen 3 tokenizer kiln wrote into the test model
# of tests/test_heal.c tokenizes the texts of tests/golden/bpe/cases.json as transformers.js does.
build/kiln-test heal_mask >/dev/null
set -o pipefail
NODE_MODULES=$MODULES node tests/ref/llama_cpp_tokenize.mjs build/tmp/heal-qwen3-model.gguf qwen3 2>"$OUT/llama_cpp_tokenize.log" |
  sed 's/^/check-long: llama.cpp tokenization of kiln'"'"'s Qwen 3 GGUF: /'

# kiln quantize writes what llama.cpp's llama-quantize writes: the same tensors, types and bytes for q8_0,
# q4_0 and q4_k_m of the random 110M llama (llama-quantize built for this CPU in the peer's cache).
if ! tests/ref/quantize_vs_llama_cpp.sh >"$OUT/quantize_vs_llama_cpp.txt"; then
  cat "$OUT/quantize_vs_llama_cpp.txt" >&2
  echo "check-long: FAILED: kiln quantize and llama-quantize wrote different tensors ($OUT/quantize_vs_llama_cpp.txt)" >&2
  exit 1
fi
sed 's/^/check-long: OK: /' "$OUT/quantize_vs_llama_cpp.txt"

scripts/check-long-train.sh

# Greedy decoding agrees with llama.cpp's for 64 steps of 6 C prompts on the small model the trainer's
# checks just trained, in f32, Q8_0 and Q4_0 (random weights leave near-ties that float order tips:
# docs/QUANTIZATION.md).
TRAINED=${CHECK_DIR:-build/check-long-train}/whole/latest.gguf
if ! RANDOM_MODEL=0 tests/ref/quant_greedy_vs_llama_cpp.sh 64 "$TRAINED" >"$OUT/greedy_trained.txt" 2>&1; then
  grep -E "^--|part at" "$OUT/greedy_trained.txt" >&2 || true
  echo "check-long: FAILED: kiln and llama.cpp part in greedy decoding of $TRAINED ($OUT/greedy_trained.txt)" >&2
  exit 1
fi
echo "check-long: OK: kiln and llama.cpp decode the same 64 greedy tokens of 6 prompts on $TRAINED (f32, Q8_0, Q4_0)"
