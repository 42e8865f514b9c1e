#!/bin/bash
# Example bash workload: summarise the numbers with awk. Without a Pipes client it reports
# through its exit code and output; Dagster records the materialization when it succeeds.
set -euo pipefail
src="$HPC_DATA_DIR/raw/numbers.csv"
dst="$HPC_DATA_DIR/stats/summary.txt"
mkdir -p "$(dirname "$dst")"
if [ ! -s "$src" ]; then
  echo "no input at $src: materialize raw/numbers first" >&2
  exit 2
fi
awk -F, 'NR > 1 { n++; s += $1; if (min == "" || $1 < min) min = $1; if (max == "" || $1 > max) max = $1 }
         END { printf "count=%d mean=%.4f min=%.4f max=%.4f\n", n, s / n, min, max }' "$src" > "$dst.tmp"
mv "$dst.tmp" "$dst"
echo "summary: $(cat "$dst")"
