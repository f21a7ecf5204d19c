#!/usr/bin/env bash
# logto-gate's benchmark: release build, then examples/bench.rs (nginx static upstream, nginx proxy_pass as the
# reference, the test IdP, the gate; wrk alternating A B A B). Needs Debian's nginx and wrk
# (apt-get install nginx wrk) and Node.js for the IdP. Prints a table; never fails on speed.
# --perf: per-request CPU, syscalls (and mallocs with a uprobe) for the gate and nginx, then a perf profile of the
# gate under load in target/bench-perf.data (needs linux-perf, run as root).
# --callgrind: user-space instructions per request for the gate and nginx under valgrind's callgrind (needs
# valgrind); repeatable where CPU time is not, for comparing two builds.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }
[ -x /usr/sbin/nginx ] || { echo "nginx is missing: apt-get install nginx" >&2; exit 2; }
# 1,000 idle connections plus wrk's need more descriptors than the usual 1024.
ulimit -n 8192 2>/dev/null || true
cargo build --release --bin logto-gate --example bench
exec target/release/examples/bench "$@"
