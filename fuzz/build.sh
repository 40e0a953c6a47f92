#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*_fuzz.cc) with ASan and UBSan.
#   bash fuzz/build.sh [outdir]      (default: build/fuzz, ignored by git)
# The core sources are compiled once into an archive that every harness links; a source is
# recompiled only when it, or any header under csrc/, is newer than its object.
# Environment: CXX (default clang++), JOBS (parallel compiles, default 2).
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
OUT="${1:-build/fuzz}"
CXX="${CXX:-clang++}"
JOBS="${JOBS:-2}"
mkdir -p "$OUT/obj"
OUT="$(cd "$OUT" && pwd)"

SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
COMMON=(-std=c++17 -g -O1 -Icsrc/include -Icsrc -DLLMDD_BUILDING_CORE=1)
# The core gets coverage instrumentation without libFuzzer's main; the harnesses bring it.
CORE_FLAGS=("${COMMON[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link)
HARNESS_FLAGS=("${COMMON[@]}" "${SAN[@]}" -fsanitize=fuzzer)

start=$(date +%s)
newest_header=$(find csrc -name '*.h' -o -name '*.def' | xargs stat -c %Y | sort -n | tail -1)
stale=()
# Every transport's sources, also in a folder of its own (csrc/transport/<name>/), as CMake globs them.
for src in csrc/{common,memory,cache,link,engine}/*.cc csrc/transport/*.cc csrc/transport/*/*.cc; do
  obj="$OUT/obj/$(echo "${src#csrc/}" | tr / _).o"
  if [[ ! -f "$obj" || "$src" -nt "$obj" || $(stat -c %Y "$obj") -lt $newest_header ]]; then
    stale+=("$src")
  fi
done
if ((${#stale[@]})); then
  echo "fuzz/build.sh: compiling ${#stale[@]} core source(s) ($JOBS at a time)"
  export OUT CXX
  printf '%s\n' "${stale[@]}" | xargs -P "$JOBS" -I{} bash -c \
    'src="{}"; obj="$OUT/obj/$(echo "${src#csrc/}" | tr / _).o"; "$CXX" "$@" -c "$src" -o "$obj"' \
    _ "${CORE_FLAGS[@]}"
  rm -f "$OUT/libllmdd_core_fuzz.a"
fi
if [[ ! -f "$OUT/libllmdd_core_fuzz.a" ]]; then
  ar rcs "$OUT/libllmdd_core_fuzz.a" "$OUT"/obj/*.o
fi

for harness in fuzz/*_fuzz.cc; do
  name="$(basename "$harness" .cc)"
  bin="$OUT/$name"
  stale_bin=0
  [[ ! -x "$bin" || "$harness" -nt "$bin" || "$OUT/libllmdd_core_fuzz.a" -nt "$bin" ]] && stale_bin=1
  for h in fuzz/*.h; do [[ "$h" -nt "$bin" ]] && stale_bin=1; done
  if ((stale_bin)); then
    echo "fuzz/build.sh: linking $name"
    "$CXX" "${HARNESS_FLAGS[@]}" "$harness" "$OUT/libllmdd_core_fuzz.a" -ldl -lpthread -o "$bin"
  fi
done
echo "fuzz/build.sh: harnesses in $OUT ($(($(date +%s) - start)) s)"
