#!/usr/bin/env bash
# logto-gate's benchmark: release build, then examples/bench.rs (nginx static upstream, nginx proxy_pass as the
# reference, the test IdP, the gate; gate and nginx alternated round by round). Prints every row of the table in
# bench/README.md with gate/nginx ratios; never fails on speed. Needs Debian's nginx, wrk, nghttp2-client (h2load)
# and openssl (apt-get install nginx wrk nghttp2-client openssl), and Node.js for the IdP.
# --perf: per-request CPU, syscalls (and mallocs with a uprobe) for the gate and nginx, then a perf profile of the
# gate under load in target/bench-perf.data (needs linux-perf, run as root).
# --callgrind: user-space instructions per request for the gate and nginx under valgrind's callgrind (needs
# valgrind); repeatable where CPU time is not, for comparing two builds.
# --pgo: a profile-guided build of the gate in target/pgo/logto-gate (an instrumented build serves one round of every
# row, its profile guides the second build; needs `rustup component add llvm-tools`), then the HTTP/1.1 rows with
# that build next to the default one (bench/README.md, "Profile-guided build").
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk h2load openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install nginx wrk nghttp2-client openssl" >&2; exit 2; }
done
[ -x /usr/sbin/nginx ] || { echo "nginx is missing: apt-get install nginx" >&2; exit 2; }
# 10,000 idle connections, each held here, in the proxy and (tunnels) at the upstream, need many descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin logto-gate --example bench
if [ "${1:-}" = "--pgo" ]; then
  shift
  # Built for the host triple named outright, so that the flags reach the gate and its dependencies but not build
  # scripts or procedural macros (which would write profiles of their own, or read one they never trained).
  host=$(rustc -vV | sed -n 's/^host: //p')
  profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
  [ -x "$profdata" ] || { echo "llvm-profdata is missing: rustup component add llvm-tools" >&2; exit 2; }
  pgo="$PWD/target/pgo"
  rm -rf "$pgo/profiles" "$pgo/gate.profdata" "$pgo/logto-gate"
  mkdir -p "$pgo/profiles"
  RUSTFLAGS="-Cprofile-generate=$pgo/profiles" \
    cargo build --release --bin logto-gate --target "$host" --target-dir "$pgo/instrumented"
  # Training: one round of every row (the sign-in, HTTP/1.1 plain and inside TLS, HTTP/2, the download, idle
  # connections of each kind); each gate writes its profile when the harness stops it (SIGTERM).
  echo "training the instrumented build (one round of every row) ..." >&2
  LLVM_PROFILE_FILE="$pgo/profiles/gate-%p.profraw" BENCH_ROUNDS=1 \
    BENCH_GATE="$pgo/instrumented/$host/release/logto-gate" target/release/examples/bench > "$pgo/training.log"
  compgen -G "$pgo/profiles/gate-*.profraw" > /dev/null || { echo "the training wrote no profile" >&2; exit 1; }
  "$profdata" merge -o "$pgo/gate.profdata" "$pgo"/profiles/gate-*.profraw
  RUSTFLAGS="-Cprofile-use=$pgo/gate.profdata" \
    cargo build --release --bin logto-gate --target "$host" --target-dir "$pgo/optimized"
  cp "$pgo/optimized/$host/release/logto-gate" "$pgo/logto-gate"
  echo "profile-guided build: $pgo/logto-gate; the HTTP/1.1 rows with it as the second build:" >&2
  BENCH_SECOND_GATE="$pgo/logto-gate" exec target/release/examples/bench --http1 "$@"
fi
exec target/release/examples/bench "$@"
