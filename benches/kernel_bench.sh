#!/usr/bin/env bash
# kernel_bench.sh - the kernel programmer's install/remove times next to the lab's references,
# in one run on one machine (run as root, one lab script at a time):
#
#   benches/kernel_bench.sh [K] [REPS]        # default K=100000, REPS=1
#
# 1. /work/shared/lab/kernel_floor.sh -k K -r REPS -t "main 100": `ip -batch` and the
#    pipelined raw-netlink writer (tools/nl_floor.py), each in a fresh lab namespace.
# 2. tests/kernel_bench.rs: our programmer in a fresh ur-* namespace, K /32s via 10.255.0.2 in
#    main, then K in main plus two per-address tables (3K routes). A failed check fails this
#    script.
# Figures: the summary of (1) and one "kernel_bench ..." line per case of (2).
set -euo pipefail
K=${1:-100000}
REPS=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-/work/shared/lab}

cargo build --release --test kernel_bench --manifest-path "$ROOT/Cargo.toml" >/dev/null
echo "== references: $LAB/kernel_floor.sh -k $K -r $REPS -t 'main 100'"
"$LAB/kernel_floor.sh" -k "$K" -r "$REPS" -t "main 100"
echo "== underroute kernel programmer"
for ((r = 1; r <= REPS; r++)); do
    UR_BENCH_K=$K cargo test --release --manifest-path "$ROOT/Cargo.toml" --test kernel_bench \
        -- --test-threads 1 --nocapture 2>&1 | grep '^test .*kernel_bench \|^kernel_bench \|panicked\|^test result'
done
