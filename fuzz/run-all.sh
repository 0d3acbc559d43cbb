#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints libFuzzer's final figures per target.
#
#   fuzz/run-all.sh [SECONDS_PER_TARGET]      (default 300)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo fuzz wants nightly features; on a stable
# toolchain RUSTC_BOOTSTRAP=1 enables them. Corpora grow in fuzz/corpus/<target> (ignored by git),
# starting from the committed seeds in fuzz/seeds/<target>; crashes land in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
export RUSTC_BOOTSTRAP=1
declare -A dict=(
    [token_parse]=""
    [record_decode]="-dict=fuzz/dicts/record.dict"
    [cookie_header]="-dict=fuzz/dicts/cookie.dict"
    [admin_route]="-dict=fuzz/dicts/admin.dict"
)
cargo fuzz build -O
status=0
for t in token_parse record_decode cookie_header admin_route; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    # shellcheck disable=SC2086
    if cargo fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 ${dict[$t]} >"$log" 2>&1; then
        result="0 crashes"
    else
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        status=1
    fi
    done_line=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -1 || true)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    echo "$t: execs=${execs:-?} ${done_line#*DONE} -> $result"
done
exit $status
