#!/usr/bin/env bash
# Builds limpet with profile-guided optimisation (PGO): an instrumented build first serves a
# short training load on loopback, and the release build then uses the profile it wrote to lay
# out, inline and order the code for the paths that load took. At 100 B on one worker this
# serves about 9 % more requests per second than `cargo build --release` (bench/RESULTS.md).
#
#   scripts/build-pgo.sh [--static] [--out FILE]
#
#   --static    a static-pie binary for this machine's triple, as docker/build-images.sh
#               builds for images FROM scratch (LIMPET_PGO=1 docker/build-images.sh uses it)
#   --out FILE  where to put the binary (default target/pgo/limpet)
#
# The training load covers what a deployment runs hot: HTTP/1.1 with and without the sticky
# cookie at 100 B, 64 KiB and 1 MiB, HTTPS, HTTP/2 from clients (h2c and over TLS) and to
# backends (h2c). Paths it does not take (TCP and UDP routes, gRPC, WebSocket, retries) are
# built as cold code: smaller, and at worst a little slower than in a plain build.
#
# Needs llvm-profdata from the LLVM that rustc uses (Debian: llvm-N, which this script
# installs when it can; elsewhere `rustup component add llvm-tools`), wrk and h2load (Debian:
# wrk, nghttp2-client, installed likewise) and openssl for a throw-away certificate.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

STATIC=0 OUT=$ROOT/target/pgo/limpet
while [ $# -gt 0 ]; do
    case "$1" in
        --static) STATIC=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build-pgo: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'build-pgo: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=debian.sh
. "$ROOT/scripts/debian.sh"

# The profile's format follows LLVM's version, so llvm-profdata must be rustc's LLVM's.
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || die "cannot tell rustc's LLVM version from 'rustc -vV'"
find_profdata() {
    local host candidate
    host=$(rustc -vV | sed -n 's/^host: //p')
    for candidate in "$(command -v "llvm-profdata-$llvm_major" || true)" \
        "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
        "$(command -v llvm-profdata || true)"; do
        if [ -x "$candidate" ] &&
            "$candidate" --version 2>/dev/null | grep -q "LLVM version $llvm_major\."; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
profdata=$(find_profdata) ||
    { debian_install "llvm-profdata-$llvm_major=llvm-$llvm_major" && profdata=$(find_profdata); } ||
    die "needs llvm-profdata of LLVM $llvm_major, rustc's: apt-get install llvm-$llvm_major, or rustup component add llvm-tools"
debian_install wrk=wrk h2load=nghttp2-client openssl=openssl ||
    die "needs wrk, h2load and openssl (Debian packages wrk, nghttp2-client, openssl)"

base_flags=${RUSTFLAGS:-}
target_args=()
# Where cargo puts the binary under a target directory: a --target build goes one deeper.
release=release
if [ "$STATIC" = 1 ]; then
    triple="$(uname -m)-unknown-linux-gnu"
    base_flags="$base_flags -C target-feature=+crt-static"
    target_args=(--target "$triple")
    release=$triple/release
fi
work=$ROOT/target/pgo
profiles=$work/profiles
rm -rf "$profiles"
mkdir -p "$profiles" "$(dirname "$OUT")"

log "instrumented build (cargo build --release, -Cprofile-generate)"
RUSTFLAGS="$base_flags -Cprofile-generate=$profiles/build" \
    cargo build --release --locked --quiet "${target_args[@]}" --target-dir "$work/generate" --bin limpet
instrumented=$work/generate/$release/limpet
# The backends are the example whoami from the ordinary build: only limpet is profiled.
cargo build --release --locked --quiet --example whoami
whoami=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/whoami

BASE=${PGO_PORT_BASE:-19280}
HTTP=$((BASE)) HTTPS=$((BASE + 1)) B1=$((BASE + 11)) B2=$((BASE + 12))
# shellcheck source=children.sh
. "$ROOT/scripts/children.sh"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=pgo.test \
    -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1 ||
    die "openssl could not make a certificate"
cat >"$work/limpet.toml" <<EOF
# scripts/build-pgo.sh's training: two whoami backends, sticky, over HTTP/1.1 and h2c.
[services.h1]
rule = "PathPrefix:/"
sticky = true
cookie_name = "limpet"
servers = [{ url = "http://127.0.0.1:$B1" }, { url = "http://127.0.0.1:$B2" }]

[services.h2c]
rule = "Host:h2c.pgo.test"
sticky = true
cookie_name = "limpet"
protocol = "h2c"
servers = [{ url = "http://127.0.0.1:$B1" }, { url = "http://127.0.0.1:$B2" }]
EOF
for port in "$B1" "$B2"; do
    "$whoami" --port "$port" >/dev/null 2>&1 &
    PIDS+=("$!")
done
log "training (about 40 s of load on loopback)"
LLVM_PROFILE_FILE="$profiles/limpet-%p-%m.profraw" "$instrumented" \
    --entrypoint "127.0.0.1:$HTTP" --entrypoint.h2c \
    --tls.address "127.0.0.1:$HTTPS" --tls.certificate "$work/cert.pem,$work/key.pem" \
    --file.filename "$work/limpet.toml" --loglevel ERROR >"$work/limpet.log" 2>&1 &
limpet=$!
PIDS+=("$limpet")
for port in "$B1" "$B2" "$HTTP" "$HTTPS"; do wait_port "$port"; done

# load NAME COMMAND...: runs one load, and stops the build if it saw errors.
load() {
    local name=$1 out
    shift
    out=$("$@" 2>&1) || die "training load '$name' failed: $out"
    if grep -qE "Non-2xx|Socket errors|[1-9][0-9]* (failed|errored|[45]xx)" <<<"$out"; then
        die "training load '$name' had errors: $out"
    fi
    log "  $name: $(grep -E 'Requests/sec|^finished in' <<<"$out" | head -1 | tr -s ' ')"
}
pinned="Cookie: limpet=http://127.0.0.1:$B1"
for size in 100 65536 1048576; do
    load "HTTP/1.1 new, $size B" wrk -t1 -c50 -d4s "http://127.0.0.1:$HTTP/?bytes=$size"
    load "HTTP/1.1 pinned, $size B" wrk -t1 -c50 -d4s -H "$pinned" "http://127.0.0.1:$HTTP/?bytes=$size"
done
load "HTTPS, 100 B" wrk -t1 -c50 -d3s -H "$pinned" "https://127.0.0.1:$HTTPS/?bytes=100"
load "h2c clients" h2load -c10 -m10 -n50000 -H "$pinned" "http://127.0.0.1:$HTTP/?bytes=100"
load "h2 clients over TLS" h2load -c10 -m10 -n50000 -H "$pinned" "https://127.0.0.1:$HTTPS/?bytes=100"
load "h2c backends" wrk -t1 -c50 -d3s -H "Host: h2c.pgo.test" -H "$pinned" "http://127.0.0.1:$HTTP/?bytes=100"

# The profile is written at exit, which a SIGTERM reaches through the graceful shutdown.
kill -TERM "$limpet"
wait "$limpet" || die "the instrumented limpet did not exit cleanly (see $work/limpet.log)"
ls "$profiles"/limpet-*.profraw >/dev/null 2>&1 || die "the instrumented limpet wrote no profile"
"$profdata" merge -o "$work/limpet.profdata" "$profiles"/limpet-*.profraw

log "optimised build (cargo build --release, -Cprofile-use)"
RUSTFLAGS="$base_flags -Cprofile-use=$work/limpet.profdata" \
    cargo build --release --locked --quiet "${target_args[@]}" --target-dir "$work/use" --bin limpet
cp "$work/use/$release/limpet" "$OUT"
log "built $OUT"
