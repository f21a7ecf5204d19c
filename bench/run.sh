#!/usr/bin/env bash
# logto-gate's benchmark: release build, then examples/bench.rs (nginx static upstream, nginx proxy_pass as the
# reference, the test IdP, the gate; gate and nginx alternated round by round). Prints every row of the table in
# bench/README.md with gate/nginx ratios; never fails on speed. Needs Debian's nginx, wrk, nghttp2-client (h2load)
# and openssl (apt-get install nginx wrk nghttp2-client openssl), and Node.js for the IdP.
# --perf: per-request CPU, syscalls (and mallocs with a uprobe) for the gate and nginx, then a perf profile of the
# gate under load in target/bench-perf.data (needs linux-perf, run as root).
# --callgrind: user-space instructions per request for the gate and nginx under valgrind's callgrind (needs
# valgrind); repeatable where CPU time is not, for comparing two builds.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk h2load openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install nginx wrk nghttp2-client openssl" >&2; exit 2; }
done
[ -x /usr/sbin/nginx ] || { echo "nginx is missing: apt-get install nginx" >&2; exit 2; }
# 10,000 idle connections, each held here, in the proxy and (tunnels) at the upstream, need many descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin logto-gate --example bench
exec target/release/examples/bench "$@"
