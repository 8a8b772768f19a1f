#!/usr/bin/env bash
# Side-by-side benchmark: the same load through the backend directly, HAProxy, nginx and
# limpet, in one run, with a table of rps, p50, p99 and errors and the ratios
# limpet/HAProxy and limpet/nginx. See bench/README.md for the method.
#
#   bench/run.sh [--quick] [--no-build] [--duration SECS] [--conns N] [--idle N]
#                [--skip-throughput] [--skip-memory] [--skip-cost] [--skip-callgrind]
#                [--skip-swaps] [--swap-services N] [--swap-rounds N]
#                [--rounds N] [--wait-quiet SECS] [--nice N] [--profile] [--only NAMES]
#
# Everything listens on 127.0.0.1 only. Every process the script starts is stopped on exit,
# including on Ctrl-C. Raw output goes to bench/out/<timestamp>/ (bench/out/latest).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick           2 s per cell, fewer requests in the cost phase, 2,000 idle connections
  --no-build        use target/release/limpet as it is (default: cargo build --release)
  --pgo             measure limpet's profile-guided build, target/pgo/limpet, made by
                    scripts/build-pgo.sh (unless --no-build too)
  --duration SECS   seconds of load per cell (default 5; --quick: 2)
  --conns N         keep-alive connections per cell (default 50)
  --idle N          idle client connections for the memory figure (default 10000)
  --skip-throughput no wrk tables (only the memory and cost phases)
  --skip-memory     no RSS phase
  --skip-cost       no per-request cost phase (CPU time, syscalls, instructions)
  --skip-callgrind  cost phase without callgrind (instructions per request)
  --skip-swaps      no table-swap phase (p99 of limpet while its table is swapped 10 times a second)
  --swap-services N filler services (10 servers each) in the swapped table (default 1000)
  --swap-rounds N   swapping cells in the swap phase, each between two quiet ones (default 6;
                    --quick: 2)
  --rounds N        run every wrk cell N times, interleaved; the report shows the median
                    (the swap phase has its own count, --swap-rounds)
  --wait-quiet SECS before each cell, wait up to SECS for other processes to go quiet
                    (on a shared machine; each cell records the others' CPU either way)
  --nice N          run the benchmark (proxies, backends, load) at niceness N, e.g. -10,
                    so that other users' builds take less CPU from it (needs root)
  --profile         also record perf profiles of limpet (new and pinned, 100 B, 1 worker)
  --only NAMES      measure only these proxies (comma-separated: haproxy,nginx,limpet), e.g.
                    --only limpet --skip-throughput --skip-memory for limpet's cost alone
Environment:
  BENCH_PORT_BASE   first of the loopback ports used (default 19080; uses base..base+40)
  LIMPET_BIN        the limpet binary to measure (default target/release/limpet; with
                    --no-build, to compare two builds without rebuilding)
EOF
}

ARGS="$*"
QUICK=0 BUILD=1 PGO=0 DURATION="" CONNS=50 IDLE="" THROUGHPUT=1 MEMORY=1 COST=1 CALLGRIND=1 PROFILE=0
ROUNDS=1 WAIT_QUIET=0 NICE="" SWAPS=1 SWAP_SERVICES=1000 SWAP_RATE=10 SWAP_ROUNDS="" ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --pgo) PGO=1 ;;
        --duration) DURATION=$2; shift ;;
        --conns) CONNS=$2; shift ;;
        --idle) IDLE=$2; shift ;;
        --skip-throughput) THROUGHPUT=0 ;;
        --skip-memory) MEMORY=0 ;;
        --skip-cost) COST=0 ;;
        --skip-callgrind) CALLGRIND=0 ;;
        --skip-swaps) SWAPS=0 ;;
        --swap-services) SWAP_SERVICES=$2; shift ;;
        --swap-rounds) SWAP_ROUNDS=$2; shift ;;
        --profile) PROFILE=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --wait-quiet) WAIT_QUIET=$2; shift ;;
        --nice) NICE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=${DURATION:-2} IDLE=${IDLE:-2000} WARMUP=1 COST_N=20000 CG_N=1000 SWAP_ROUNDS=${SWAP_ROUNDS:-2}
else
    DURATION=${DURATION:-5} IDLE=${IDLE:-10000} WARMUP=2 COST_N=100000 CG_N=4000 SWAP_ROUNDS=${SWAP_ROUNDS:-6}
fi
case "$SWAP_ROUNDS" in
    ''|*[!0-9]*|0) echo "run.sh: --swap-rounds takes a whole number from 1, not '$SWAP_ROUNDS'" >&2; exit 2 ;;
esac

BASE=${BENCH_PORT_BASE:-19080}
PORT_A=$((BASE + 1)) PORT_B=$((BASE + 2))
declare -A PORT=([direct]=$PORT_A [limpet]=$((BASE + 20)) [haproxy]=$((BASE + 30)) [nginx]=$((BASE + 40)))
PROXIES=(haproxy nginx limpet)
if [ -n "$ONLY" ]; then
    IFS=, read -r -a PROXIES <<<"$ONLY"
    for name in "${PROXIES[@]}"; do
        case "$name" in haproxy|nginx|limpet) ;; *) echo "run.sh: --only: unknown proxy $name (haproxy, nginx, limpet)" >&2; exit 2 ;; esac
    done
fi
SIZES=(100b 64k 1m)

STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$BENCH_DIR/out/$STAMP"
RUN="$OUT/run"
mkdir -p "$RUN/www" "$RUN/tmp" "$OUT/logs" "$OUT/raw"
ln -sfn "$STAMP" "$BENCH_DIR/out/latest"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup

declare -a PIDS=()
declare -A PID_OF=()

# launch NAME CMD...: starts CMD in the background, output to logs/NAME.log.
launch() {
    local name=$1; shift
    "$@" >"$OUT/logs/$name.log" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
}

# halt NAME: SIGTERM, then SIGKILL after a while (valgrind needs time to write its file).
halt() {
    local name=$1 pid=${PID_OF[$1]:-} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID_OF[$name]"
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# The pids whose CPU and memory count for a target: nginx's master and its workers.
pids_of() {
    local pid=${PID_OF[$1]:-}
    [ -n "$pid" ] || return 0
    echo "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null || true)
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 limit=${2:-20} name=${3:-} i
    for i in $(seq 1 $((limit * 10))); do
        port_open "$port" && return 0
        if [ -n "$name" ] && ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            die "$name exited at start; see $OUT/logs/$name.log"
        fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$port after ${limit}s ($name)"
}

# Total CPU time (ns) of every thread of the given processes, from the scheduler.
cpu_ns() {
    local total=0 p f ns rest
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r ns rest <"$f" 2>/dev/null && total=$((total + ns))
        done
    done
    echo "$total"
}

# Sum of a /proc field (kB) over processes: mem_kib FILE FIELD PID...
mem_kib() {
    local file=$1 field=$2 total=0 p v; shift 2
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/$file" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# Busy time of the whole machine (ns): user, nice, system, irq, softirq and steal ticks.
# (mawk clamps %d at 2^31, hence %.0f for nanoseconds.)
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
machine_busy_ns() {
    awk -v t="$TICK_NS" '$1 == "cpu" { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * t }' /proc/stat
}

# CPU time (ns) of this shell's finished children, i.e. wrk once it has exited, left in
# CHILDREN_NS. Called as a command, never as $(children_ns): a command substitution runs in
# a subshell, and a subshell's `times` counts its own children (none), not this shell's.
children_ns() {
    times >"$OUT/.times"
    CHILDREN_NS=$(awk 'NR == 2 { total = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); total += p[1] * 60 + p[2] }
        printf "%.0f\n", total * 1e9 }' "$OUT/.times")
}

# User and system ticks of processes, from /proc/<pid>/stat: "user sys".
user_sys_ticks() {
    local p u=0 s=0 a b
    for p in "$@"; do
        read -r a b < <(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12, $13 }')
        u=$((u + a)) s=$((s + b))
    done
    echo "$u $s"
}

# CPU time (ns) of limpet's control-plane threads (named limpet-control) in process $1. Read
# from /proc/<pid>/task/<tid>/stat: user_sys_ticks's /proc/<tid>/stat counts the whole process.
control_ns() {
    local task ticks=0
    for task in /proc/"$1"/task/*; do
        [ "$(cat "$task/comm" 2>/dev/null)" = limpet-control ] || continue
        ticks=$((ticks + $(sed 's/.*) //' "$task/stat" | awk '{ print $12 + $13 }')))
    done
    echo $((ticks * TICK_NS))
}

# With --wait-quiet: waits until the machine, with this benchmark idle, is below 15 % of a
# core busy over one second, or until the limit. Prints the seconds waited.
wait_quiet() {
    local waited=0 before after
    [ "$WAIT_QUIET" -gt 0 ] || { echo 0; return; }
    while :; do
        before=$(machine_busy_ns); sleep 1; after=$(machine_busy_ns)
        [ $(((after - before) / 10000000)) -lt 15 ] && break
        waited=$((waited + 1))
        [ "$waited" -ge "$WAIT_QUIET" ] && break
        sleep 1; waited=$((waited + 1))
    done
    echo "$waited"
}

# ---------------------------------------------------------------- tools

ensure_tools() {
    local wanted=(haproxy=haproxy nginx=nginx-light wrk=wrk h2load=nghttp2-client curl=curl
                  taskset=util-linux python3=python3)
    [ "$COST" = 1 ] && [ "$CALLGRIND" = 1 ] && wanted+=(valgrind=valgrind)
    [ "$PROFILE" = 1 ] && wanted+=(perf=linux-perf)
    # shellcheck source=../scripts/debian.sh
    . "$ROOT/scripts/debian.sh"
    debian_install "${wanted[@]}" || die "cannot install what the benchmark needs (${wanted[*]}: tool=Debian package)"
    export PATH="$PATH:/usr/sbin:/sbin"
}

# ---------------------------------------------------------------- configuration files

USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"   # workers must read the files under bench/out

render() { # render TEMPLATE OUTPUT KEY=VALUE...
    local template=$1 output=$2 expr=() kv; shift 2
    for kv in "$@" "RUN=$RUN" "PORT_A=$PORT_A" "PORT_B=$PORT_B" "USER_LINE=$USER_LINE"; do
        expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${expr[@]}" "$BENCH_DIR/conf/$template" >"$output"
}

write_configs() {
    local body100
    body100=$(printf 'limpet-bench%.0s' $(seq 1 9) | head -c 100)
    render backend-nginx.conf.in "$RUN/backend.conf" "BODY100=$body100"
    head -c 65536 /dev/zero | tr '\0' 'x' >"$RUN/www/64k"
    head -c 1048576 /dev/zero | tr '\0' 'x' >"$RUN/www/1m"
    render limpet.toml.in "$RUN/limpet.toml"
    render haproxy.cfg.in "$RUN/haproxy-1.cfg" "PORT=${PORT[haproxy]}" "NBTHREAD_LINE=nbthread 1" "ULIMIT=$(ulimit -n)"
    render haproxy.cfg.in "$RUN/haproxy-default.cfg" "PORT=${PORT[haproxy]}" "NBTHREAD_LINE=" "ULIMIT=$(ulimit -n)"
    render nginx-proxy.conf.in "$RUN/nginx-1.conf" "PORT=${PORT[nginx]}" "WORKERS=1" "MASTER_LINE="
    render nginx-proxy.conf.in "$RUN/nginx-default.conf" "PORT=${PORT[nginx]}" "WORKERS=auto" "MASTER_LINE="
    # Under valgrind nginx runs as one process, so that one callgrind file holds the worker.
    render nginx-proxy.conf.in "$RUN/nginx-single.conf" "PORT=${PORT[nginx]}" "WORKERS=1" "MASTER_LINE=master_process off;"
}

# ---------------------------------------------------------------- starting the proxies

if [ "$PGO" = 1 ]; then
    LIMPET="${LIMPET_BIN:-$ROOT/target/pgo/limpet}"
else
    LIMPET="${LIMPET_BIN:-$ROOT/target/release/limpet}"
fi

# start_proxy NAME MODE [WRAPPER...]: MODE is 1 (one worker, pinned), scaling (one worker,
# nothing pinned) or default.
start_proxy() {
    local name=$1 mode=$2; shift 2
    local pin=()
    [ "$mode" = 1 ] && pin=(taskset -c 0)
    [ "$mode" = scaling ] && mode=1
    case "$name" in
        limpet)
            local workers=()
            [ "$mode" = 1 ] && workers=(--workers 1)
            launch limpet "${pin[@]}" "$@" "$LIMPET" --entrypoint "127.0.0.1:${PORT[limpet]}" \
                --file.filename "$RUN/limpet.toml" --loglevel ERROR "${workers[@]}" ;;
        haproxy)
            launch haproxy "${pin[@]}" "$@" haproxy -db -f "$RUN/haproxy-$mode.cfg" ;;
        nginx)
            local conf="$RUN/nginx-$mode.conf"
            [ $# -gt 0 ] && conf="$RUN/nginx-single.conf"
            launch nginx "${pin[@]}" "$@" nginx -p "$RUN" -e "$RUN/nginx-proxy.err" -c "$conf" ;;
    esac
    wait_port "${PORT[$name]}" "$([ $# -gt 0 ] && echo 120 || echo 20)" "$name"
}

# ---------------------------------------------------------------- checks before measuring

declare -A PIN_COOKIE=()

# Checks a proxy's stickiness the way a browser would see it, and learns the cookie the
# pinned scenario sends: the one the proxy set on a first visit.
preflight() {
    local name=$1 url="http://127.0.0.1:${PORT[$1]}" headers cookie backend again seen i size
    headers=$(curl -s -m 5 -D - -o /dev/null "$url/100b") || die "$name: no answer on $url"
    grep -q '^HTTP/1.1 200' <<<"$headers" || die "$name: $url/100b did not answer 200"
    cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: *\([^;]*\).*/\1/p' <<<"$headers" | tr -d '\r' | head -1)
    backend=$(sed -n 's/^[Xx]-[Bb]ackend: *\([a-z]*\).*/\1/p' <<<"$headers" | head -1)
    [ -n "$cookie" ] || die "$name: a first visit got no Set-Cookie"
    for i in 1 2 3; do
        again=$(curl -s -m 5 -D - -o /dev/null -H "Cookie: $cookie" "$url/100b")
        seen=$(sed -n 's/^[Xx]-[Bb]ackend: *\([a-z]*\).*/\1/p' <<<"$again" | head -1)
        [ "$seen" = "$backend" ] || die "$name: cookie $cookie went to backend $seen, not $backend"
        if grep -qi '^set-cookie' <<<"$again"; then die "$name: set a cookie although the client sent one"; fi
    done
    for size in 64k:65536 1m:1048576; do
        [ "$(curl -s -m 10 -o /dev/null -w '%{size_download}' -H "Cookie: $cookie" "$url/${size%%:*}")" = "${size#*:}" ] \
            || die "$name: /${size%%:*} did not return ${size#*:} bytes"
    done
    local spread=""
    for i in 1 2 3 4 5 6 7 8; do
        spread+=$(curl -s -m 5 -D - -o /dev/null "$url/100b" | sed -n 's/^[Xx]-[Bb]ackend: *\([a-z]*\).*/\1/p')
    done
    PIN_COOKIE[$name]=$cookie
    log "preflight $name: first visit -> backend $backend with cookie '$cookie'; pinned requests stay there; 8 new visits went to: $spread"
}

# ---------------------------------------------------------------- one measurement

# cell MODE ROUND SIZE SCENARIO TARGET: one wrk run; appends a JSON line to results.jsonl.
# Besides wrk's figures it records the CPU time of the target (the proxy, or the backend
# for "direct"), of the load's side (wrk and the backends: what the proxy's workers have to
# share the cores with when nothing is pinned) and of everything else on the machine that
# is not this benchmark ("others": other users' builds), the measure of how noisy the cell was.
cell() {
    local mode=$1 round=$2 size=$3 scenario=$4 target=$5
    local url="http://127.0.0.1:${PORT[$target]}/$size" cookie="" pids=() ours=() raw line waited
    local cpu0 cpu1 ours0 ours1 busy0 busy1 wrk0 wrk1 be0 be1
    case "$scenario" in pinned|quiet|swapping) [ "$target" != direct ] && cookie=${PIN_COOKIE[$target]} ;; esac
    if [ "$target" = direct ]; then pids=($(pids_of backend)); else pids=($(pids_of "$target")); fi
    ours=($(pids_of backend) $(for name in "${PROXIES[@]}"; do pids_of "$name"; done))
    raw="$OUT/raw/$mode-$scenario-$size-$target-r$round.txt"
    waited=$(wait_quiet)
    children_ns
    cpu0=$(cpu_ns "${pids[@]}") ours0=$(cpu_ns "${ours[@]}") busy0=$(machine_busy_ns) wrk0=$CHILDREN_NS
    be0=$(cpu_ns $(pids_of backend))
    "${LOAD_PIN[@]}" timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" \
        --timeout 10s -s "$BENCH_DIR/wrk/load.lua" "$url" -- "$cookie" >"$raw" 2>&1 || true
    children_ns
    cpu1=$(cpu_ns "${pids[@]}") ours1=$(cpu_ns "${ours[@]}") busy1=$(machine_busy_ns) wrk1=$CHILDREN_NS
    be1=$(cpu_ns $(pids_of backend))
    line=$(sed -n 's/^WRK //p' "$raw")
    [ -n "$line" ] || { log "wrk failed for $mode/$scenario/$size/$target; see $raw"; line='null'; }
    printf '{"mode": "%s", "round": %d, "size": "%s", "scenario": "%s", "target": "%s", "cpu_ns": %d, "load_ns": %d, "cpus": %d, "others_ns": %d, "waited_s": %d, "wrk": %s}\n' \
        "$mode" "$round" "$size" "$scenario" "$target" $((cpu1 - cpu0)) $(((wrk1 - wrk0) + (be1 - be0))) "$(nproc)" \
        $(((busy1 - busy0) - (ours1 - ours0) - (wrk1 - wrk0))) "$waited" "$line" >>"$OUT/results.jsonl"
    python3 "$BENCH_DIR/report.py" --cell "$OUT/results.jsonl" | tee -a "$OUT/run.log" >&2
}

warm() { # warm TARGET: a short load so pools and caches are filled before measuring
    "${LOAD_PIN[@]}" timeout $((WARMUP + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" \
        "http://127.0.0.1:${PORT[$1]}/100b" >"$OUT/raw/warmup-$1.txt" 2>&1 || true
}

# ---------------------------------------------------------------- phases

# Table swaps under load (issue 6, item 2): limpet alone at 1 worker with the pinned 100 B
# load, its table padded to SWAP_SERVICES services of 10 servers, measured with a quiet
# control plane and while the file changes SWAP_RATE times a second, each change a new table
# built and swapped. The cells alternate, quiet first and last (q0 s1 q1 s2 ... sN qN), so
# that every swapping cell has a quiet one on each side: the VM's drift over the phase moves
# both neighbours as much as the cell between them, and the quiet cells compared with each
# other show how far p99 moves with no swaps at all. The swaps limpet really made are counted
# from its log ("publishing new routing table", one line per swap, never per request).
swap_phase() {
    local round swapper writes before after control servers=$((SWAP_SERVICES * 10 + 2))
    log "== table swaps: limpet, 1 worker, pinned 100 B, $SWAP_SERVICES extra services ($servers servers), $SWAP_RATE swaps/s =="
    python3 "$BENCH_DIR/swap_table.py" --base "$RUN/limpet.toml" --out "$RUN/limpet-swap.toml" \
        --services "$SWAP_SERVICES" --servers 10
    LOAD_PIN=(taskset -c 1) WRK_THREADS=1
    for name in $(pids_of backend); do taskset -a -p -c 1 "$name" >/dev/null; done
    load_line swaps
    launch limpet taskset -c 0 "$LIMPET" --entrypoint "127.0.0.1:${PORT[limpet]}" \
        --file.filename "$RUN/limpet-swap.toml" --file.pollinterval 20ms --loglevel INFO --workers 1
    wait_port "${PORT[limpet]}" 20 limpet
    preflight limpet
    warm limpet
    cell swap 0 100b quiet limpet
    for round in $(seq 1 "$SWAP_ROUNDS"); do
        before=$(grep -c 'publishing new routing table' "$OUT/logs/limpet.log" || true)
        launch swapper taskset -c 1 python3 "$BENCH_DIR/swap_table.py" --base "$RUN/limpet.toml" \
            --out "$RUN/limpet-swap.toml" --services "$SWAP_SERVICES" --servers 10 \
            --rate "$SWAP_RATE" --duration $((DURATION + WARMUP + 2))
        sleep "$WARMUP"
        control=$(control_ns "${PID_OF[limpet]}")
        cell swap "$round" 100b swapping limpet
        wait "${PID_OF[swapper]}" 2>/dev/null || true
        unset "PID_OF[swapper]"
        # The control plane's CPU over the rest of the writes, from the swapping cell on.
        control=$(($(control_ns "${PID_OF[limpet]}") - control))
        writes=$(sed -n 's/^WRITES //p' "$OUT/logs/swapper.log")
        after=$(grep -c 'publishing new routing table' "$OUT/logs/limpet.log" || true)
        printf '{"round": %d, "services": %d, "servers": %d, "rate": %s, "seconds": %d, "writes": %d, "swaps": %d, "control_ns": %d, "control_seconds": %d}\n' \
            "$round" "$((SWAP_SERVICES + 1))" "$servers" "$SWAP_RATE" $((DURATION + WARMUP + 2)) \
            "${writes:-0}" $((after - before)) "$control" $((DURATION + 2)) >>"$OUT/swaps.jsonl"
        log "swaps: $((after - before)) tables published for ${writes:-0} file writes; control plane $((control / 1000000)) ms of CPU in the last $((DURATION + 2)) s"
        cell swap "$round" 100b quiet limpet
    done
    halt limpet
}

load_line() { log "load average: $(cut -d' ' -f1-3 /proc/loadavg) (before $1)"; echo "$1 $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"; }

throughput_phase() {
    local mode=$1 name size scenario sizes=("${SIZES[@]}")
    if [ "$mode" = 1 ]; then
        LOAD_PIN=(taskset -c 1) WRK_THREADS=1
        taskset -a -p -c 1 "${PID_OF[backend]}" >/dev/null
        for name in $(pids_of backend); do taskset -a -p -c 1 "$name" >/dev/null; done
        log "== 1 worker: proxies on CPU 0; wrk (1 thread) and the backends on CPU 1 =="
    else
        LOAD_PIN=() WRK_THREADS=2
        for name in $(pids_of backend); do taskset -a -p -c 0-$(($(nproc) - 1)) "$name" >/dev/null; done
        if [ "$mode" = scaling ]; then
            # What a second worker adds, measured in the default cells' conditions: the
            # 1-worker cells above give the proxy a core of its own, these do not.
            sizes=(100b)
            log "== 1 worker, nothing pinned (the baseline for default workers); wrk with 2 threads, 100 B =="
        else
            log "== default workers: nothing pinned; wrk with 2 threads =="
        fi
    fi
    load_line "mode $mode"
    for name in "${PROXIES[@]}"; do start_proxy "$name" "$mode"; done
    for name in "${PROXIES[@]}"; do preflight "$name"; done
    for name in direct "${PROXIES[@]}"; do warm "$name"; done
    local round
    for round in $(seq 1 "$ROUNDS"); do
        for size in "${sizes[@]}"; do
            cell "$mode" "$round" "$size" any direct
            for scenario in new pinned; do
                for name in "${PROXIES[@]}"; do cell "$mode" "$round" "$size" "$scenario" "$name"; done
            done
        done
    done
    [ "$mode" = 1 ] && [ "$PROFILE" = 1 ] && profile_phase
    for name in "${PROXIES[@]}"; do halt "$name"; done
}

# RSS of each proxy idle and with many idle keep-alive client connections (default workers).
memory_phase() {
    local name pids idle_rss idle_pss rss pss ready open client_out i
    log "== memory: $IDLE idle keep-alive connections per proxy (default workers) =="
    load_line memory
    for name in "${PROXIES[@]}"; do
        start_proxy "$name" default
        h2load --h1 -n 1000 -c 10 "http://127.0.0.1:${PORT[$name]}/100b" >"$OUT/raw/mem-warm-$name.txt" 2>&1 || true
        sleep 1
        pids=($(pids_of "$name"))
        idle_rss=$(mem_kib status VmRSS "${pids[@]}") idle_pss=$(mem_kib smaps_rollup Pss "${pids[@]}")
        client_out="$OUT/raw/mem-clients-$name.txt"
        launch "idle-$name" python3 "$BENCH_DIR/idle_clients.py" --port "${PORT[$name]}" --count "$IDLE"
        ready=""
        for i in $(seq 1 1200); do
            ready=$(sed -n 's/^READY //p' "$OUT/logs/idle-$name.log")
            [ -n "$ready" ] && break
            kill -0 "${PID_OF[idle-$name]}" 2>/dev/null || break
            sleep 0.1
        done
        [ -n "$ready" ] || ready='{"ok": 0, "failed": -1}'
        sleep 1
        pids=($(pids_of "$name"))
        rss=$(mem_kib status VmRSS "${pids[@]}") pss=$(mem_kib smaps_rollup Pss "${pids[@]}")
        open=$(ss -Htn state established "( sport = :${PORT[$name]} )" | wc -l)
        cp "$OUT/logs/idle-$name.log" "$client_out"
        halt "idle-$name"
        halt "$name"
        printf '{"target": "%s", "idle_rss_kib": %d, "idle_pss_kib": %d, "loaded_rss_kib": %d, "loaded_pss_kib": %d, "connections": %d, "open": %d, "clients": %s}\n' \
            "$name" "$idle_rss" "$idle_pss" "$rss" "$pss" "$IDLE" "$open" "$ready" >>"$OUT/memory.jsonl"
        log "memory $name: idle ${idle_rss} KiB, with $open open connections ${rss} KiB RSS (clients: $ready)"
    done
}

# h2load_run NAME SCENARIO N CONC OUTFILE [WRAPPER...]: a fixed number of requests
# (pinned: with the cookie the preflight learned).
h2load_run() {
    local name=$1 scenario=$2 n=$3 c=$4 out=$5; shift 5
    local header=()
    [ "$scenario" = pinned ] && header=(-H "Cookie: ${PIN_COOKIE[$name]}")
    "$@" "${LOAD_PIN[@]}" h2load --h1 -n "$n" -c "$c" -m 1 "${header[@]}" \
        "http://127.0.0.1:${PORT[$name]}/100b" >"$out" 2>&1 || true
}

# CPU time, syscalls and context switches per request at full speed, then instructions
# per request under callgrind. One worker, proxy on CPU 0, load on CPU 1, 100 B bodies.
cost_phase() {
    local name scenario out before after pids perf_ok=0 dump ok ir pid ticks0 ticks1 round
    LOAD_PIN=(taskset -c 1) WRK_THREADS=1
    log "== per-request cost: 1 worker, 100 B, h2load -n $COST_N (callgrind: -n $CG_N) =="
    load_line cost
    perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1 && perf_ok=1
    [ "$perf_ok" = 1 ] || log "perf cannot count syscalls here; CPU time only"
    # All three run at once (only the one under load is busy) so that the rounds can
    # interleave them: slow drift in background load then spreads over all of them.
    for name in "${PROXIES[@]}"; do
        start_proxy "$name" 1
        [ -n "${PIN_COOKIE[$name]:-}" ] || preflight "$name"
        h2load_run "$name" new 2000 50 "$OUT/raw/cost-warm-$name.txt"
    done
    for round in $(seq 1 "$ROUNDS"); do
        for scenario in new pinned; do
            for name in "${PROXIES[@]}"; do
                out="$OUT/raw/cost-$name-$scenario-r$round.txt"
                pids=($(pids_of "$name"))
                wait_quiet >/dev/null
                before=$(cpu_ns "${pids[@]}") ticks0=$(user_sys_ticks "${pids[@]}")
                if [ "$perf_ok" = 1 ]; then
                    h2load_run "$name" "$scenario" "$COST_N" 50 "$out" \
                        perf stat -x, -o "$out.perf" -e raw_syscalls:sys_enter,context-switches \
                        -p "$(IFS=,; echo "${pids[*]}")" --
                else
                    h2load_run "$name" "$scenario" "$COST_N" 50 "$out"
                fi
                after=$(cpu_ns "${pids[@]}") ticks1=$(user_sys_ticks "${pids[@]}")
                ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^succeeded/) print $i }' "$out")
                printf '{"target": "%s", "scenario": "%s", "round": %d, "kind": "native", "requests": %d, "cpu_ns": %d, "user_ticks": %d, "sys_ticks": %d, "syscalls": %s, "ctx_switches": %s}\n' \
                    "$name" "$scenario" "$round" "${ok:-0}" $((after - before)) \
                    $((${ticks1% *} - ${ticks0% *})) $((${ticks1#* } - ${ticks0#* })) \
                    "$(awk -F, '$3 ~ /sys_enter/ { print $1 }' "$out.perf" 2>/dev/null | grep . || echo null)" \
                    "$(awk -F, '$3 ~ /context-switches/ { print $1 }' "$out.perf" 2>/dev/null | grep . || echo null)" \
                    >>"$OUT/cost.jsonl"
            done
        done
    done
    for name in "${PROXIES[@]}"; do halt "$name"; done
    [ "$CALLGRIND" = 1 ] || return 0
    mkdir -p "$OUT/callgrind"
    for name in "${PROXIES[@]}"; do
        log "callgrind: $name"
        start_proxy "$name" 1 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind/$name.%p"
        h2load_run "$name" new 300 10 "$OUT/raw/cg-warm-$name.txt"
        for scenario in new pinned; do
            out="$OUT/raw/cg-$name-$scenario.txt"
            callgrind_control -z "${PID_OF[$name]}" >/dev/null 2>&1
            h2load_run "$name" "$scenario" "$CG_N" 10 "$out"
            callgrind_control --dump="$scenario" "${PID_OF[$name]}" >/dev/null 2>&1
            sleep 1
            dump=$(ls -t "$OUT/callgrind/$name.${PID_OF[$name]}".* | head -1)
            mv "$dump" "$OUT/callgrind/$name-$scenario.callgrind"
            ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$OUT/callgrind/$name-$scenario.callgrind")
            ok=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^succeeded/) print $i }' "$out")
            printf '{"target": "%s", "scenario": "%s", "kind": "callgrind", "requests": %d, "instructions": %d}\n' \
                "$name" "$scenario" "${ok:-0}" "${ir:-0}" >>"$OUT/cost.jsonl"
            callgrind_annotate --inclusive=yes "$OUT/callgrind/$name-$scenario.callgrind" 2>/dev/null \
                | head -150 >"$OUT/callgrind/$name-$scenario.inclusive.txt" || true
            callgrind_annotate "$OUT/callgrind/$name-$scenario.callgrind" 2>/dev/null \
                | head -150 >"$OUT/callgrind/$name-$scenario.self.txt" || true
        done
        pid=${PID_OF[$name]}
        halt "$name"
        rm -f "$OUT/callgrind/$name.$pid" "$OUT/callgrind/$name.$pid".* # the whole-run file
    done
}

# perf profiles of limpet (1 worker, 100 B) under each scenario; called with limpet running.
profile_phase() {
    local scenario data cookie=""
    perf record -e cpu-clock -o /dev/null true >/dev/null 2>&1 || { log "perf record does not work here; no profile"; return 0; }
    mkdir -p "$OUT/profile"
    for scenario in new pinned; do
        cookie=""
        [ "$scenario" = pinned ] && cookie=${PIN_COOKIE[limpet]}
        data="$OUT/profile/limpet-$scenario.data"
        log "profiling limpet, $scenario sessions"
        perf record -e cpu-clock -F 999 --call-graph dwarf,32768 -o "$data" -p "${PID_OF[limpet]}" -- \
            "${LOAD_PIN[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$BENCH_DIR/wrk/load.lua" \
            "http://127.0.0.1:${PORT[limpet]}/100b" -- "$cookie" >"$OUT/profile/wrk-$scenario.txt" 2>&1 || true
        # perf pads its columns to the longest (async Rust) symbol; trim that.
        perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null \
            | grep -v '^#' | grep . | sed 's/[[:space:]]*$//' >"$OUT/profile/limpet-$scenario.dso.txt" || true
        perf report -i "$data" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.3 2>/dev/null \
            | grep -v '^#' | grep . | sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//; s/[[:space:]]*$//' \
            >"$OUT/profile/limpet-$scenario.self.txt" || true
        perf report -i "$data" --children --sort symbol --stdio -g none --percent-limit 1 2>/dev/null \
            | grep -v '^#' | grep . | sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//; s/[[:space:]]*$//' \
            >"$OUT/profile/limpet-$scenario.children.txt" || true
    done
}

# ---------------------------------------------------------------- main

ensure_tools
for name in direct limpet haproxy nginx; do
    port_open "${PORT[$name]}" && die "127.0.0.1:${PORT[$name]} is in use; set BENCH_PORT_BASE to another range"
done
port_open "$PORT_B" && die "127.0.0.1:$PORT_B is in use; set BENCH_PORT_BASE to another range"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (proxy on one, load and backends on the other)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 1000)) ] \
    && log "warning: ulimit -n is $(ulimit -n); $IDLE idle connections may not fit"

if [ -n "$NICE" ]; then
    # Every process started from here on inherits it; the build below too, which is harmless.
    renice -n "$NICE" -p $$ >/dev/null || die "cannot set niceness $NICE (needs root for < 0)"
    # With autogroups (one scheduling group per session), niceness only ranks processes
    # within a group; between groups the group's own niceness counts, so set that too.
    # It covers this script's session: run it with setsid to keep that to the benchmark.
    if [ -w "/proc/$$/autogroup" ]; then
        echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || log "warning: cannot set the autogroup's niceness"
    fi
    log "running at niceness $NICE ($(cat "/proc/$$/autogroup" 2>/dev/null || echo 'no autogroup'))"
fi

if [ "$BUILD" = 1 ] && [ "$PGO" = 1 ]; then
    log "building limpet (scripts/build-pgo.sh)"
    "$ROOT/scripts/build-pgo.sh" || die "scripts/build-pgo.sh failed"
elif [ "$BUILD" = 1 ]; then
    log "building limpet (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$LIMPET" ] || die "$LIMPET is missing (drop --no-build)"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: bench/run.sh $ARGS"
    echo "options: duration=${DURATION}s conns=$CONNS rounds=$ROUNDS wait-quiet=${WAIT_QUIET}s nice=${NICE:-0} idle=$IDLE quick=$QUICK"
    echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "limpet: $(cd "$ROOT" && git log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || echo unknown) (last commit touching src/ and Cargo.*; HEAD $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null))$([ "$PGO" = 1 ] && echo ', profile-guided build')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ', with uncommitted changes')"
    echo "haproxy: $(haproxy -v | head -1 | cut -d' ' -f3)  nginx: $(nginx -v 2>&1 | cut -d/ -f2)  wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
} >"$OUT/meta.txt"

write_configs
launch backend nginx -p "$RUN" -e "$RUN/backend.err" -c "$RUN/backend.conf"
wait_port "$PORT_A" 10 backend
wait_port "$PORT_B" 10 backend

if [ "$THROUGHPUT" = 1 ]; then
    throughput_phase 1
    throughput_phase scaling
    throughput_phase default
fi
[ "$SWAPS" = 1 ] && swap_phase
[ "$MEMORY" = 1 ] && memory_phase
[ "$COST" = 1 ] && cost_phase
load_line end
halt backend

python3 "$BENCH_DIR/report.py" "$OUT" | tee "$OUT/report.txt"
log "raw output: $OUT"
