# Sourced by the scripts that start servers on loopback and must not leave them behind
# (scripts/build-pgo.sh, bench/paired.sh):
#
#   PIDS+=("$!")     after starting each one in the background; all are killed at exit
#   wait_port PORT   returns once something accepts on 127.0.0.1:PORT; exits after 10 s
PIDS=()
kill_children() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap kill_children EXIT
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): nothing listens on port $1" >&2
    exit 1
}
