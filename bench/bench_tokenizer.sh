#!/usr/bin/env bash
# Tokenizer benchmark: kiln's BytePiece trainer and encoder against SentencePiece (Debian's spm_train and
# spm_encode, unigram and BPE) on the same C corpus, same vocabulary size, same run, same threads.
#
#   bench/bench_tokenizer.sh [TRAIN_MB] [VOCAB]        (defaults: 100 MB, 8000)
#
# THREADS (default 2) sets the training threads; KILN another kiln binary (default: build/kiln, made).
# Corpus: C sources (.c, .h) from Debian's linux-source-6.1 when /usr/src holds it, else headers from
# /usr/include; files in a fixed pseudo-random order, the first TRAIN_MB for training and the next 5 MB
# (other files) held out. Cached under $KILN_BENCH_CACHE (default ~/.cache/kiln-bench).
#
# Figures: training time and peak memory (/usr/bin/time), compression in bytes per token on the held-out
# files, encoding speed in MB/s (one thread each, ids written to /dev/null). SentencePiece treats every
# line as a sentence and never emits the newlines, so each newline is counted as one more spm token: a
# tokenizer that must reproduce the text needs one for it.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_MB=${1:-100}
VOCAB=${2:-8000}
THREADS=${THREADS:-2}
HELD_MB=5
CACHE=${KILN_BENCH_CACHE:-$HOME/.cache/kiln-bench}/tokenizer
KILN=${KILN:-build/kiln}

for tool in spm_train spm_encode /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench_tokenizer: $tool is missing (apt-get install sentencepiece time python3)" >&2; exit 1; }
done
[ "$KILN" != build/kiln ] || make -s "$KILN" >/dev/null
mkdir -p "$CACHE"

# ---- corpus ----
TAR=$(ls /usr/src/linux-source-6.1*.tar.xz 2>/dev/null | head -1 || true)
if [ -n "$TAR" ]; then
  SRC="$CACHE/linux"
  CORPUS_NAME="Linux 6.1 C sources ($(basename "$TAR"))"
  if [ ! -e "$SRC/.done" ]; then
    echo "extracting the .c and .h files of $TAR ..." >&2
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xJf "$TAR" -C "$SRC" --wildcards '*.c' '*.h'
    touch "$SRC/.done"
  fi
else
  SRC=/usr/include
  CORPUS_NAME="C headers from /usr/include (linux-source-6.1 not installed)"
fi
TRAIN="$CACHE/train-${TRAIN_MB}M.txt"
HELD="$CACHE/heldout-${TRAIN_MB}M.txt"
if [ ! -s "$TRAIN" ] || [ ! -s "$HELD" ]; then
  python3 - "$SRC" "$TRAIN" "$HELD" "$TRAIN_MB" "$HELD_MB" <<'EOF'
import os, random, sys
src, train, held, train_mb, held_mb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(('.c', '.h')))
random.Random(1).shuffle(files)
with open(train, 'wb') as tr, open(held, 'wb') as ho:
    n = h = 0
    for f in files:
        if os.path.islink(f) or not os.path.isfile(f):
            continue
        data = open(f, 'rb').read()
        if n < train_mb << 20:
            tr.write(data); n += len(data)
        elif h < held_mb << 20:
            ho.write(data); h += len(data)
        else:
            break
    if n < train_mb << 20 or h < held_mb << 20:
        sys.exit('bench_tokenizer: the corpus has only %d + %d bytes' % (n, h))
EOF
fi
TRAIN_BYTES=$(stat -c %s "$TRAIN")
HELD_BYTES=$(stat -c %s "$HELD")
HELD_LINES=$(wc -l < "$HELD")
MAXLINE=$(awk '{ if (length($0) > m) m = length($0) } END { print m + 16 }' "$TRAIN")

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Runs a command under /usr/bin/time; leaves "wall_seconds max_rss_kib cpu_seconds" in $OUT/time.
timed() {
  /usr/bin/time -f "%e %M %U %S" -o "$OUT/time.raw" "$@" >"$OUT/stdout" 2>"$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
  read -r wall rss user sys < "$OUT/time.raw"
  echo "$wall $rss $(python3 -c "print($user + $sys)")" > "$OUT/time"
}
# The best wall and the best CPU seconds of 3 runs of an encoder reading the held-out file.
encode_secs() {
  local wall=1e9 cpu=1e9 w c
  for _ in 1 2 3; do
    timed "$@"
    read -r w _ c < "$OUT/time"
    wall=$(python3 -c "print(min($w, $wall))"); cpu=$(python3 -c "print(min($c, $cpu))")
  done
  echo "$wall $cpu"
}

echo "corpus: $CORPUS_NAME: train $((TRAIN_BYTES >> 20)) MiB, held-out $((HELD_BYTES >> 20)) MiB ($HELD_LINES lines); vocab $VOCAB; $THREADS threads for training; $(nproc) cores" >&2

echo "training kiln BytePiece ..." >&2
timed "$KILN" tokenizer train "$TRAIN" --vocab "$VOCAB" -o "$OUT/kiln.gguf" --threads "$THREADS" --quiet
read -r K_SECS K_RSS K_CPU < "$OUT/time"
K_VOCAB=$(grep -o '[0-9]* pieces' "$OUT/stdout" | cut -d' ' -f1)
SPM_FLAGS=(--vocab_size="$VOCAB" --normalization_rule_name=identity --remove_extra_whitespaces=false --byte_fallback=true
           --max_sentence_length="$MAXLINE" --input_sentence_size=100000000 --num_threads="$THREADS" --minloglevel=2)
echo "training spm unigram ..." >&2
timed spm_train --input="$TRAIN" --model_prefix="$OUT/uni" --model_type=unigram "${SPM_FLAGS[@]}"
read -r U_SECS U_RSS U_CPU < "$OUT/time"
echo "training spm bpe ..." >&2
timed spm_train --input="$TRAIN" --model_prefix="$OUT/bpe" --model_type=bpe "${SPM_FLAGS[@]}"
read -r B_SECS B_RSS B_CPU < "$OUT/time"

echo "encoding the held-out files ..." >&2
K_TOK=$("$KILN" tokenize -m "$OUT/kiln.gguf" -f "$HELD" | wc -w)
U_TOK=$(( $(spm_encode --model="$OUT/uni.model" --output_format=id < "$HELD" | wc -w) + HELD_LINES ))
B_TOK=$(( $(spm_encode --model="$OUT/bpe.model" --output_format=id < "$HELD" | wc -w) + HELD_LINES ))
read -r K_ENC K_ENC_CPU < <(encode_secs "$KILN" tokenize -m "$OUT/kiln.gguf" -f "$HELD")
read -r U_ENC U_ENC_CPU < <(encode_secs sh -c "spm_encode --model='$OUT/uni.model' --output_format=id < '$HELD'")
read -r B_ENC B_ENC_CPU < <(encode_secs sh -c "spm_encode --model='$OUT/bpe.model' --output_format=id < '$HELD'")
python3 - "$HELD_BYTES" "$VOCAB" "$K_VOCAB" "$K_SECS" "$K_CPU" "$K_RSS" "$K_TOK" "$K_ENC" "$K_ENC_CPU" \
          "$U_SECS" "$U_CPU" "$U_RSS" "$U_TOK" "$U_ENC" "$U_ENC_CPU" \
          "$B_SECS" "$B_CPU" "$B_RSS" "$B_TOK" "$B_ENC" "$B_ENC_CPU" <<'EOF'
import sys
a = sys.argv[1:]
held, vocab, kvocab = int(a[0]), int(a[1]), int(a[2])
rows = [('kiln bytepiece', a[3:9]), ('spm unigram', a[9:15]), ('spm bpe', a[15:21])]
fig = {}
print('%-16s %9s %9s %9s %12s %12s %12s' % ('', 'train s', 'cpu s', 'peak MiB', 'bytes/token', 'encode MB/s',
                                            'per cpu s'))
for name, (secs, cpu, rss, tok, enc, enc_cpu) in rows:
    fig[name] = (float(secs), float(cpu), int(rss) / 1024, held / int(tok), held / 1e6 / float(enc),
                 held / 1e6 / float(enc_cpu))
    print('%-16s %9.1f %9.1f %9.0f %12.3f %12.2f %12.2f' % ((name,) + fig[name]))
k = fig['kiln bytepiece']
print('kiln vocabulary: %d of %d requested' % (kvocab, vocab))
for peer in ('spm unigram', 'spm bpe'):
    p = fig[peer]
    print('vs %-12s training %.2fx faster (cpu %.2fx), %.2fx less memory, compression %.3fx, '
          'encoding %.1fx faster (cpu %.1fx)' % (peer, p[0] / k[0], p[1] / k[1], p[2] / k[2], k[3] / p[3],
                                                 k[4] / p[4], k[5] / p[5]))
u = fig['spm unigram']
ok = lambda c: 'met' if c else 'MISSED'
print('targets: compression >= spm unigram: %s; encoding >= 5x spm unigram: %s; training no slower than spm unigram: %s'
      % (ok(k[3] >= u[3]), ok(k[4] >= 5 * u[4]), ok(k[0] <= u[0])))
print('load average during the run: %s' % open('/proc/loadavg').read().split()[0])
EOF
