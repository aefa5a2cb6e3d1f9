#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints each one's runs and exec/s.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 seconds, every target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); without them it
# says so and exits 0. New corpus entries go to fuzz/work/<target>/ (not committed); the
# small seed corpora in fuzz/corpus/<target>/ are read too. A crash, a hang (a unit taking
# over 10 s) or a leak stops that target, leaves the input in fuzz/artifacts/<target>/ and
# makes the script exit 1 after the other targets ran.
set -u
cd "$(dirname "$0")"

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: skipping: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: skipping: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/$target" "corpus/$target"
    log="work/$target.log"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20
        summary+=("$target: FAILED (exit $status, log in fuzz/$log)")
    else
        summary+=("$target: ok, ${runs:-?} runs, ${rate:-?} exec/s")
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
