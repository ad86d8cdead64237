#!/usr/bin/env bash
# Installs a build tree into a temporary prefix, checks what landed there, then builds and runs a small program
# against the installed package: through pkg-config (shared, and static with --static) and through CMake's
# find_package(kiln) (kiln::kiln and kiln::kiln_static).
# usage: install_check.sh BUILD_DIR C_COMPILER APP_SOURCE_DIR
set -euo pipefail
build=$1
cc=$2
app=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "install_check: $*"; }
die() { echo "install_check: FAILED: $*" >&2; exit 1; }

step "cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; die "cmake --install"; }

pc=$(find "$prefix" -name kiln.pc -print -quit)
[ -n "$pc" ] || die "no kiln.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/bin/kiln" "$prefix/include/kiln/kiln.h" "$libdir/libkiln.a" "$libdir/libkiln.so" \
         "$libdir/cmake/kiln/kilnConfig.cmake" "$libdir/cmake/kiln/kilnConfigVersion.cmake"; do
  [ -e "$f" ] || die "$f was not installed"
done
# Every header kiln.h includes must be installed, and the headers must compile on their own as C11.
echo '#include <kiln/kiln.h>' | "$cc" -std=c11 -Wall -Werror -fsyntax-only -I"$prefix/include" -x c - ||
  die "the installed headers do not compile"

step "the installed kiln runs"
"$prefix/bin/kiln" --version | grep -q '^kiln ' || die "installed kiln --version"
"$prefix/bin/kiln" --help >/dev/null || die "installed kiln --help"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
step "pkg-config: $(pkg-config --modversion kiln)"
"$cc" -std=c11 -o "$tmp/app_pc" "$app/app.c" $(pkg-config --cflags --libs kiln) || die "build through pkg-config"
LD_LIBRARY_PATH="$libdir" "$tmp/app_pc" || die "the pkg-config (shared) program"
# Static libkiln, shared system libraries (what a static link of kiln looks like on a distribution: `pkg-config
# --static` would also ask for the static closure of libmicrohttpd's TLS stack, which -dev packages do not carry):
# libkiln.a, then the modules of Requires.private and the Libs.private line. No libkiln.so needed at run time.
static_libs="$(pkg-config --libs $(pkg-config --print-requires-private kiln)) $(sed -n 's/^Libs.private: //p' "$pc")"
"$cc" -std=c11 -o "$tmp/app_pc_static" "$app/app.c" $(pkg-config --cflags kiln) "$libdir/libkiln.a" $static_libs ||
  die "static build through pkg-config --static"
"$tmp/app_pc_static" || die "the pkg-config (static) program"
if command -v ldd >/dev/null && ldd "$tmp/app_pc_static" | grep -q libkiln; then die "static program needs libkiln.so"; fi

step "find_package(kiln)"
cmake -S "$app" -B "$tmp/app-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" >"$tmp/cfg.log" 2>&1 ||
  { cat "$tmp/cfg.log" >&2; die "configuring a find_package(kiln) project"; }
cmake --build "$tmp/app-build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; die "building it"; }
"$tmp/app-build/app_shared" || die "the find_package (kiln::kiln) program"
"$tmp/app-build/app_static" || die "the find_package (kiln::kiln_static) program"
step "ok"
