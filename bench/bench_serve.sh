#!/usr/bin/env bash
# kiln serve's continuous batching: aggregate generated tokens/s with 1, 4 and 16 concurrent clients on
# one server, against the same 16 clients served one at a time (--slots 1). C clients are C requests
# kept in flight, C x REQS in all, of 64 new tokens each (min_tokens = max_tokens, so every answer has
# the same length), after a warm-up round of one short request per client (a slot's first use faults in
# its cache and scratch memory, a one-time cost of tens of MiB per slot that a running server has long
# paid). The model is a random llama (dim 512, 8 layers, 32000 tokens, bf16) with the llama 2
# tokenizer. Loopback only.
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_TMP:-/tmp/kiln-bench}
THREADS=${THREADS:-$(nproc)}
REQS=${REQS:-4}
TOK=../shared/testdata/llama2-tokenizer/tokenizer.bin
mkdir -p "$T"
model="$T/serve-llama-bf16.gguf"
[ -s "$model" ] || build/bench/make_model "$model" bf16 512 8 8 8 1408 32000 1024 --tokenizer "$TOK" >/dev/null
cat "$model" >/dev/null # into the page cache

# requests N C BODY URL: N POSTs of BODY, C at a time, from one curl process (a process per request
# would cost more CPU than the server on 2 cores, at every wave of new requests)
requests() {
  curl -s --no-progress-meter -Z --parallel-immediate --parallel-max "$2" -d "$3" $(for _ in $(seq "$1"); do echo "$4"; done) >/dev/null
}

# run SLOTS CLIENTS: prints the aggregate tokens/s
run() {
  local slots=$1 clients=$2 port_file="$T/serve.port"
  rm -f "$port_file"
  build/kiln serve -m "$model" --port 0 --port-file "$port_file" --slots "$slots" --threads "$THREADS" 2>/dev/null &
  local pid=$!
  for _ in $(seq 200); do [ -s "$port_file" ] && break; sleep 0.05; done
  local url="http://127.0.0.1:$(cat "$port_file")/v1/completions"
  local body='{"prompt":"Once upon a time","max_tokens":64,"min_tokens":64,"temperature":0.8}'
  local t0 t1
  requests "$clients" "$clients" '{"prompt":"Once upon a time","max_tokens":2}' "$url"
  t0=$(date +%s.%N)
  requests "$((clients * REQS))" "$clients" "$body" "$url"
  t1=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v n=$((clients * REQS * 64)) -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

one=$(run 16 1); four=$(run 16 4); sixteen=$(run 16 16); serial=$(run 1 16)
echo "aggregate tokens/s (threads $THREADS, $REQS requests x 64 tokens per client):"
echo "   1 client:              $one"
echo "   4 clients:             $four"
echo "  16 clients:             $sixteen"
echo "  16 clients, one at a time (--slots 1): $serial"
awk -v a="$sixteen" -v b="$serial" 'BEGIN { printf "continuous batching speed-up at 16 clients: %.2fx\n", a / b }'
