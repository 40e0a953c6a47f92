#!/usr/bin/env bash
# Builds the harnesses (if needed) and fuzzes each for SECONDS, from a copy of its checked-in
# corpus (fuzz/corpus/<harness>/, so nothing is written into the repository).
#   bash fuzz/run.sh SECONDS
# Exits non-zero when any harness crashed or a sanitizer reported, after printing the
# reproducer's path and the report with its stack. Every harness runs even if one fails.
# Environment: FUZZ_OUT (build dir, default build/fuzz), FUZZ_WORK (where corpora copies,
# logs and reproducers go; default a new temporary directory, kept when something failed).
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:?usage: fuzz/run.sh SECONDS}"
OUT="${FUZZ_OUT:-build/fuzz}"
bash fuzz/build.sh "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
WORK="${FUZZ_WORK:-$(mktemp -d -t llmdd-fuzz.XXXXXX)}"
mkdir -p "$WORK"
failed=()
for harness in fuzz/*_fuzz.cc; do
  name="$(basename "$harness" .cc)"
  corpus="$WORK/$name/corpus"
  artifacts="$WORK/$name/artifacts"
  log="$WORK/$name/log"
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  [[ -d "fuzz/corpus/$name" ]] && cp "fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null
  echo "== $name: $SECONDS_EACH s from $(ls "$corpus" | wc -l) seeds"
  # Bounded twice: libFuzzer's own clock, and a hard stop well past it (a hang in a harness).
  timeout --kill-after=30 $((SECONDS_EACH + 120)) "$OUT/$name" -max_total_time="$SECONDS_EACH" -timeout=10 \
    -rss_limit_mb=2048 -report_slow_units=1 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" \
    >"$log" 2>&1
  rc=$?
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed "s/^/   $name: /"
  grep -E '^stat::(average_exec_per_sec|number_of_executed_units|slowest_unit_time_sec)' "$log" | sed 's/^/   /'
  grep -h 'slow handshake' "$log" | sort | uniq -c | sed 's/^/   /'
  if ((rc != 0)); then
    failed+=("$name")
    echo "!! $name failed (exit $rc); log: $log"
    for reproducer in "$artifacts"/*; do
      [[ -e "$reproducer" ]] || continue
      case "$(basename "$reproducer")" in slow-unit-*) continue ;; esac
      echo "!! reproducer: $reproducer"
      echo "!! reproduce:  $OUT/$name $reproducer"
    done
    # The report with its stacks: from the first error line to its SUMMARY line.
    awk '/^==[0-9]+==( )?ERROR|runtime error:|fuzz harness:/ {found=1} found {print} found && /^SUMMARY:/ {exit}' \
      "$log" | head -150
  fi
  for slow in "$artifacts"/slow-unit-*; do
    [[ -e "$slow" ]] && echo "   slow input (> 1 s, not a failure): $slow"
  done
done
if ((${#failed[@]})); then
  echo "fuzz/run.sh: FAILED: ${failed[*]} (everything is under $WORK)"
  exit 1
fi
echo "fuzz/run.sh: no crash in ${SECONDS_EACH} s per harness"
[[ -z "${FUZZ_WORK:-}" ]] && rm -rf "$WORK"
exit 0
