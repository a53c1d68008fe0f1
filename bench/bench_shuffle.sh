#!/usr/bin/env bash
# kiln shuffle, in one run: an input 3x larger than --mem against a sequential copy of it (`cat IN > OUT`,
# and the same followed by `sync OUT`, since kiln fsyncs its output), and an input that fits in memory
# against GNU shuf. Prints wall time, speed, CPU time (user + system), peak resident memory, and the
# ratios of wall-clock speeds.
#   SHUFFLE_MEM (default 1G), SHUFFLE_BIG_MB (3072), SHUFFLE_SMALL_MB (500); temporary files under
#   $BENCH_TMP (default /tmp), removed at the end.
set -eu
cd "$(dirname "$0")/.."
KILN=$PWD/build/kiln
MEM=${SHUFFLE_MEM:-1G}
BIG_MB=${SHUFFLE_BIG_MB:-3072}
SMALL_MB=${SHUFFLE_SMALL_MB:-500}
[ -x "$KILN" ] || { echo "bench_shuffle: build $KILN first (make)" >&2; exit 1; }
command -v shuf >/dev/null || { echo "bench_shuffle: GNU shuf not found" >&2; exit 1; }
mkdir -p "${BENCH_TMP:-/tmp}"
DIR=$(mktemp -d "${BENCH_TMP:-/tmp}/kiln-bench-shuffle.XXXXXX")
trap 'rm -rf "$DIR"' EXIT

# Lines of 10 to 200 printable bytes (mean ~105): a 64 MiB block of random lines, repeated with a counter
# prefix so that no two lines of an input are equal.
python3 - "$DIR/block" <<'EOF'
import random, sys
rng = random.Random(1)
alphabet = "abcdefghijklmnopqrstuvwxyz      ,.ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
pool = "".join(rng.choice(alphabet) for _ in range(1 << 20))
out, size = [], 0
while size < 64 << 20:
    n, s = rng.randint(10, 200), rng.randrange(0, len(pool) - 200)
    out.append(pool[s:s + n] + "\n")
    size += n + 1
open(sys.argv[1], "w").write("".join(out))
EOF
make_input() { # FILE MB
    local i=0
    : > "$1"
    while [ "$(stat -c %s "$1")" -lt $(( $2 << 20 )) ]; do
        sed "s/^/$i /" "$DIR/block" >> "$1"
        i=$((i + 1))
    done
    truncate -s $(( $2 << 20 )) "$1"
}
make_input "$DIR/big.txt" "$BIG_MB"
make_input "$DIR/small.txt" "$SMALL_MB"
sync

# measure NAME MB COMMAND...: sets WALL; prints wall time, MB/s, CPU time and peak RSS of COMMAND.
measure() {
    local name=$1 mb=$2 user=? sys=? rss=? t0 t1
    shift 2
    t0=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%U %S %M" -o "$DIR/time" "$@"
        read -r user sys rss < "$DIR/time"
    else
        "$@"
    fi
    t1=$(date +%s.%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    awk -v n="$name" -v w="$WALL" -v mb="$mb" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
        cpu = (u == "?") ? "?" : sprintf("%.2f", u + s)
        printf "  %-28s %7.2f s %6.0f MB/s   cpu %6s s   peak RSS %s KB\n", n, w, mb / w, cpu, r }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "kiln shuffle: ${BIG_MB} MiB input at --mem $MEM (external), ${SMALL_MB} MiB input (in memory); $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
# A first copy, not measured: it brings the input into the page cache and has the kernel find room for
# the output's pages, which made a first measured copy 3x slower than the next.
cat "$DIR/big.txt" > "$DIR/out"
rm -f "$DIR/out"
measure "cat IN > OUT" "$BIG_MB" sh -c 'cat "$1" > "$2"' _ "$DIR/big.txt" "$DIR/out"
cat_s=$WALL
rm -f "$DIR/out"
measure "cat IN > OUT; sync OUT" "$BIG_MB" sh -c 'cat "$1" > "$2"; sync "$2"' _ "$DIR/big.txt" "$DIR/out"
catsync_s=$WALL
rm -f "$DIR/out"
measure "kiln shuffle --mem $MEM" "$BIG_MB" "$KILN" shuffle "$DIR/big.txt" -o "$DIR/out" --mem "$MEM" --seed 1 --quiet
kiln_big_s=$WALL
[ "$(stat -c %s "$DIR/out")" -ge $(( BIG_MB << 20 )) ] || { echo "bench_shuffle: short output" >&2; exit 1; }
rm -f "$DIR/out"
echo "  ratio: kiln speed / cat speed = $(ratio "$cat_s" "$kiln_big_s") (target >= 0.50);" \
    "kiln / (cat; sync) = $(ratio "$catsync_s" "$kiln_big_s")"

measure "shuf" "$SMALL_MB" shuf "$DIR/small.txt" -o "$DIR/out"
shuf_s=$WALL
rm -f "$DIR/out"
measure "kiln shuffle (in memory)" "$SMALL_MB" "$KILN" shuffle "$DIR/small.txt" -o "$DIR/out" --mem 4G --seed 1 --quiet
kiln_small_s=$WALL
rm -f "$DIR/out"
echo "  ratio: kiln speed / shuf speed = $(ratio "$shuf_s" "$kiln_small_s") (target >= 1.00)"
