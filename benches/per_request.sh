#!/usr/bin/env bash
# Allocations and instructions per request, in process (memory store), from valgrind:
#     benches/per_request.sh
# Runs each kind with 1000 and 2000 requests and prints the difference / 1000.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench per_request --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*per_request[^"]*"' | tail -1 | cut -d'"' -f4)
printf '%-10s %14s %14s %16s\n' kind allocs/req bytes/req instructions/req
for kind in none untouched read write; do
  stats() {
    valgrind --tool=dhat --dhat-out-file=/dev/null "$bin" "$kind" "$1" 2>&1 \
      | awk '/Total:/ {gsub(",", "", $3); gsub(",", "", $6); print $3, $6}'
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$kind" "$1" 2>&1 \
      | awk '/Collected/ {gsub(",", "", $4); print $4}'
  }
  read -r b1 n1 i1 < <(stats 1000 | xargs)
  read -r b2 n2 i2 < <(stats 2000 | xargs)
  printf '%-10s %14.1f %14.0f %16.0f\n' "$kind" \
    "$(echo "($n2-$n1)/1000" | bc -l)" "$(echo "($b2-$b1)/1000" | bc -l)" "$(echo "($i2-$i1)/1000" | bc -l)"
done
