#!/usr/bin/env bash
# test-summary.sh DIR: totals over the go test JSON files gotestsum wrote for
# each layer of `make test` (subtests included), so a run ends with a count.
set -euo pipefail
dir=${1:-_out/test}
shopt -s nullglob
files=("$dir"/*.json)
if ((${#files[@]} == 0)); then echo "==> no test results in $dir"; exit 0; fi
count() { cat "${files[@]}" | grep -c "\"Action\":\"$1\",\"Package\":\"[^\"]*\",\"Test\":" || true; }
printf '==> tests: %d passed, %d failed, %d skipped (%s)\n' "$(count pass)" "$(count fail)" "$(count skip)" \
  "$(cd "$dir" && ls -- *.json | sed 's/\.json$//' | paste -sd' ')"
