#!/usr/bin/env bash
# Long checks (`make check-long`): fuzzes the GGUF reader with libFuzzer under ASan and UBSan for
# FUZZ_SECONDS (default 60). The fuzzer is built from the library sources it needs (not libkiln.a, which
# is not instrumented) into build/fuzz/. The corpus starts from every GGUF file in tests/golden/ and those
# the GGUF tests write, and grows in build/fuzz/corpus-gguf/ from run to run. Fails on any crash, leak,
# undefined behaviour or input slower than 10 s; the input that did it is left in build/fuzz/.
set -eu
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
CORPUS=$OUT/corpus-gguf
mkdir -p "$OUT" "$CORPUS"

clang -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
      fuzz/fuzz_gguf.c src/base/*.c src/format/gguf.c -lm -o "$OUT/fuzz_gguf"

# Seeds: the committed GGUF files, and the files the GGUF tests write (under build/tmp/gguf_*).
if [ -x build/kiln-test ]; then build/kiln-test gguf >/dev/null || true; fi
for f in tests/golden/*.gguf build/tmp/gguf_*/*.gguf; do
  [ -f "$f" ] && cp "$f" "$CORPUS/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
done
echo "check-long: fuzzing the GGUF reader for ${FUZZ_SECONDS}s from $(ls "$CORPUS" | wc -l) corpus files"

LOG=$OUT/fuzz_gguf.log
set +e
"$OUT/fuzz_gguf" -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
                 -artifact_prefix="$OUT/" "$CORPUS" >"$LOG" 2>&1
rc=$?
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -1)
if [ $rc -ne 0 ]; then
  grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$LOG" | head -20 >&2 || true
  echo "check-long: FAILED: fuzz_gguf crashed after ${execs:-?} execs (exit $rc); log: $LOG" >&2
  exit 1
fi
echo "check-long: OK: fuzz_gguf ran ${execs:-?} execs in ${FUZZ_SECONDS}s, no crash (corpus now $(ls "$CORPUS" | wc -l) files)"
