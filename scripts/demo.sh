#!/usr/bin/env bash
# The main job, end to end on the built-in default (`make demo`): collect the C headers of this machine
# (/usr/include) into a corpus, train kiln's default byte-level model on it for a fixed time budget,
# print its bits per byte on the held-out files beside xz and zstd, and complete a few C prompts with it.
#
#   KILN_DEMO_MINUTES  training budget in minutes (default 10)
#   KILN_DEMO_DIR      where the corpus and the run go (default build/demo; the previous run there is replaced)
#   KILN_DEMO_SRC      directories to learn from (default /usr/include)
#   KILN_DEMO_EVAL     held-out bytes to score, spread over the valid files (default 256K)
set -eu
cd "$(dirname "$0")/.."
MINUTES=${KILN_DEMO_MINUTES:-10}
DIR=${KILN_DEMO_DIR:-build/demo}
SRC=${KILN_DEMO_SRC:-/usr/include}
EVAL=${KILN_DEMO_EVAL:-256K}
KILN=build/kiln
[ -x "$KILN" ] || make -s build/kiln
mkdir -p "$DIR"
RUN=$DIR/run

echo "== 1. corpus: the C sources under $SRC"
# shellcheck disable=SC2086
$KILN corpus $SRC -o "$DIR/c.corpus"

echo
echo "== 2. training the default model for $MINUTES minutes (progress below; log in $RUN/log.jsonl)"
rm -rf "$RUN"
$KILN train --data "$DIR/c.corpus" --out "$RUN" --minutes "$MINUTES" --progress

echo
echo "== 3. held-out bits per byte, beside general-purpose compressors on the same bytes"
$KILN eval -m "$RUN/latest.gguf" --data "$DIR/c.corpus" --max-bytes "$EVAL" --cond-bytes 16M
$KILN plot "$RUN" -o "$RUN/curves.svg"
echo "(loss curves per channel: $RUN/curves.svg)"

echo
echo "== 4. completions (greedy, 160 bytes each)"
for prompt in '#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
' 'static inline int
' 'struct list_head {
' '#ifndef _LINUX_'; do
  printf -- '--- the prompt, then what the model wrote after it:\n'
  $KILN generate -m "$RUN/latest.gguf" -p "$prompt" -n 160 --temp 0 2>"$DIR/generate.err" ||
    { echo "(kiln generate failed:)"; cat "$DIR/generate.err"; exit 1; }
  printf '\n\n'
done
echo "== 5. try it yourself"
echo "  write C with the model's ghost-text suggestions (Tab accepts, Esc saves and quits):"
echo "    $KILN complete -m $RUN/latest.gguf my.c"
echo "  or let it write:"
echo "    $KILN generate -m $RUN/latest.gguf -p 'your C code' -n 300 --temp 0.7"
