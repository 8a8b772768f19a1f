#!/usr/bin/env bash
# Paired rounds: limpet and a peer (HAProxy or nginx) alternately under the same wrk load,
# one worker each, and the ratios limpet/peer of every pair (rps and p99), with their medians.
#
#   bench/paired.sh [--peer haproxy|nginx] [--rounds N] [--duration SECS] [--size 100b|64k|1m]
#
# On a VM whose speed drifts, a cell of bench/run.sh can move by 0.3x between runs. A pair
# measured back to back shares most of the drift, so the median of the pairs' ratios is the
# steadier figure. It reuses the configuration that bench/run.sh wrote (bench/out/latest/run,
# or RUN=dir): run that once first, `bench/run.sh --quick` is enough. Same pinning as its
# 1-worker mode: the proxy on CPU 0, wrk and the backends on CPU 1. Loopback only.
set -euo pipefail
# A failed measurement inside $(...) stops the script, not just its subshell.
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${RUN:-$ROOT/bench/out/latest/run}
LIMPET=${LIMPET_BIN:-$ROOT/target/release/limpet}
BASE=${BENCH_PORT_BASE:-19080}
PEER=haproxy ROUNDS=8 DURATION=5 SIZE=100b
while [ $# -gt 0 ]; do
    case "$1" in
        --peer) PEER=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --size) SIZE=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "paired.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$PEER" in
    haproxy|nginx) ;;
    *) echo "paired.sh: --peer is haproxy or nginx, not '$PEER'" >&2; exit 2 ;;
esac
for f in backend.conf haproxy-1.cfg nginx-1.conf limpet.toml; do
    [ -f "$RUN/$f" ] || { echo "paired.sh: $RUN/$f is missing; run bench/run.sh --quick first" >&2; exit 1; }
done
[ -x "$LIMPET" ] || { echo "paired.sh: no limpet binary at $LIMPET (cargo build --release)" >&2; exit 1; }
LIMPET_PORT=$((BASE + 20)) HAPROXY_PORT=$((BASE + 30)) NGINX_PORT=$((BASE + 40))

# shellcheck source=../scripts/children.sh
. "$ROOT/scripts/children.sh"

taskset -c 1 nginx -p "$RUN" -e "$RUN/backend.err" -c "$RUN/backend.conf" &
PIDS+=("$!")
wait_port $((BASE + 1))

# measure NAME: one round of new and pinned sessions; prints "NAME SCENARIO RPS P99_US".
measure() {
    local name=$1 port pid cookie
    case "$name" in
        limpet)
            taskset -c 0 "$LIMPET" --entrypoint "127.0.0.1:$LIMPET_PORT" \
                --file.filename "$RUN/limpet.toml" --loglevel ERROR --workers 1 >/dev/null 2>&1 &
            port=$LIMPET_PORT cookie="limpet=http://127.0.0.1:$((BASE + 1))" ;;
        haproxy)
            taskset -c 0 haproxy -db -f "$RUN/haproxy-1.cfg" >/dev/null 2>&1 &
            port=$HAPROXY_PORT cookie="SRV=s1" ;;
        nginx)
            taskset -c 0 nginx -p "$RUN" -e "$RUN/nginx-proxy.err" -c "$RUN/nginx-1.conf" >/dev/null 2>&1 &
            port=$NGINX_PORT cookie="ngx_sid=0123456789abcdef0123456789abcdef" ;;
    esac
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    for scenario in new pinned; do
        local sent="" out
        [ "$scenario" = pinned ] && sent=$cookie
        taskset -c 1 wrk -t1 -c50 -d1s -s "$ROOT/bench/wrk/load.lua" "http://127.0.0.1:$port/$SIZE" -- "$sent" >/dev/null
        out=$(taskset -c 1 wrk -t1 -c50 -d"${DURATION}s" -s "$ROOT/bench/wrk/load.lua" \
            "http://127.0.0.1:$port/$SIZE" -- "$sent" | sed -n 's/^WRK //p')
        python3 -c '
import json, sys
w = json.loads(sys.argv[3])
if w is None:
    sys.exit(f"paired.sh: wrk measured nothing through {sys.argv[1]}")
errors = sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
n = w["requests"]
if errors or not n:
    sys.exit(f"paired.sh: {sys.argv[1]} answered {errors} errors in {n} requests")
print(sys.argv[1], sys.argv[2], w["requests"] / (w["duration_us"] / 1e6), w["p99_us"])
' "$name" "$scenario" "${out:-null}"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

case "$PEER" in
    haproxy) version=$(haproxy -v | head -1 | cut -d' ' -f1-3) ;;
    nginx) version=$(nginx -v 2>&1) ;;
esac
echo "limpet $(git -C "$ROOT" rev-parse --short HEAD) vs $version; $ROUNDS pairs of ${DURATION}s, /$SIZE, 1 worker"
results=$(for _ in $(seq 1 "$ROUNDS"); do measure "$PEER"; measure limpet; done)
python3 - "$PEER" "$results" <<'EOF'
import statistics, sys
peer = sys.argv[1]
rows = [line.split() for line in sys.argv[2].splitlines()]
for scenario in ("new", "pinned"):
    for column, figure, show in ((2, "rps", lambda x: f"{x / 1000:5.1f}k"), (3, "p99", lambda x: f"{x / 1000:4.2f}ms")):
        got = {name: [float(r[column]) for r in rows if r[0] == name and r[1] == scenario]
               for name in (peer, "limpet")}
        ratios = [l / p for p, l in zip(got[peer], got["limpet"])]
        print(f"{scenario:6}  {peer:7} {figure}  " + " ".join(show(x) for x in got[peer]))
        print(f"{scenario:6}  limpet  {figure}  " + " ".join(show(x) for x in got["limpet"]))
        print(f"{scenario:6}  limpet/{peer} {figure} " + " ".join(f"{r:5.2f} " for r in ratios)
              + f"   median {statistics.median(ratios):.2f}")
EOF
