#!/usr/bin/env bash
# Builds the images limpet's demo and Swarm tests run, on a machine without any registry:
#
#   limpet:latest         ENTRYPOINT ["/limpet"], EXPOSE 80 8080
#   limpet-whoami:latest  ENTRYPOINT ["/whoami"], EXPOSE 8000 (examples/whoami.rs)
#   limpet-whoami-health:latest  the same with HEALTHCHECK CMD ["/whoami", "--probe"], for the
#                         Swarm test of Docker health (its short intervals suit a test only)
#
# Both are `FROM scratch` around a static binary from the host's toolchain, so nothing is
# pulled. (docker/Dockerfile builds the same images inside a `rust` image, for machines that
# can pull one.) Cargo builds incrementally and Docker caches the COPY layer by content, so a
# rerun with no change is quick and yields the same image IDs.
#
# LIMPET_PGO=1 puts limpet's profile-guided build in the image (scripts/build-pgo.sh --static,
# a few minutes more), the faster one; without it, the plain release build.
#
# Prints `<tag> <image id>` for each image. Scripts pass the IDs, not the tags, to
# `docker service create --no-resolve-image` and `docker stack deploy --resolve-image never`,
# so that the engine never asks a registry about them.
set -euo pipefail
cd "$(dirname "$0")/.."

triple="$(uname -m)-unknown-linux-gnu"
log() { printf 'build-images: %s\n' "$*" >&2; }

# A static glibc binary (static-pie) needs nothing from the image it runs in. Two cargo runs,
# because building an example switches on the dev-dependencies' features (tokio's test-util)
# for everything built alongside it, and limpet's binary should be exactly the released one.
log "cargo build --release --target $triple (static)"
export RUSTFLAGS='-C target-feature=+crt-static'
cargo build --release --locked --target "$triple" --bin limpet
cargo build --release --locked --target "$triple" --example whoami

target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/$triple/release"

limpet_binary=$out/limpet
if [ "${LIMPET_PGO:-0}" = 1 ]; then
    log "LIMPET_PGO=1: profile-guided build (scripts/build-pgo.sh --static)"
    limpet_binary=$out/limpet-pgo
    RUSTFLAGS= scripts/build-pgo.sh --static --out "$limpet_binary"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# scratch_image TAG BINARY USER PORTS [CA_BUNDLE] [EXTRA]: an image holding only BINARY as
# /<its name> (and CA_BUNDLE where TLS libraries look for one), run as USER, with EXTRA
# Dockerfile instructions at the end.
scratch_image() {
    local tag=$1 binary=$2 user=$3 ports=$4 ca_bundle=${5:-} extra=${6:-}
    local name
    name=$(basename "$binary")
    # FROM scratch has no dynamic loader: a dynamic binary would fail at start with a bare
    # "no such file or directory", so refuse to build such an image.
    if readelf --program-headers "$binary" | grep -q 'program interpreter'; then
        log "$binary is dynamically linked; it cannot run FROM scratch"
        exit 1
    fi
    rm -rf "${context:?}"/*
    cp "$binary" "$context/$name"
    {
        echo "FROM scratch"
        echo "COPY $name /$name"
        if [ -n "$ca_bundle" ]; then
            cp "$ca_bundle" "$context/ca-certificates.crt"
            echo "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
        fi
        echo "USER $user"
        echo "EXPOSE $ports"
        echo "ENTRYPOINT [\"/$name\"]"
        if [ -n "$extra" ]; then
            echo "$extra"
        fi
    } >"$context/Dockerfile"
    log "docker build -t $tag"
    # Quiet unless it fails: the legacy builder's deprecation notice is noise here.
    local output
    if ! output=$(docker build --quiet --tag "$tag" "$context" 2>&1); then
        printf '%s\n' "$output" >&2
        exit 1
    fi
    printf '%-22s %s\n' "$tag" "$(docker image inspect --format '{{.Id}}' "$tag")"
}

# limpet verifies HTTPS backends against the system's roots unless given a CA bundle; an
# empty image has none, so it gets the build machine's (Debian's path, which rustls looks at).
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -f "$ca_bundle" ]; then
    log "no $ca_bundle here; limpet's image gets no system roots (HTTPS backends need a CA bundle)"
    ca_bundle=''
fi
# limpet runs as root: it reads the Docker socket (root:docker, 0660) and listens on port 80.
scratch_image limpet:latest "$limpet_binary" 0:0 "80 8080" "$ca_bundle"
# whoami needs no privilege at all.
scratch_image limpet-whoami:latest "$out/examples/whoami" 65534:65534 8000
# Exec form: the image has no shell, and `docker service create --health-cmd` would make a
# shell command. (A test cannot derive this image itself: the legacy builder asks a registry
# about `FROM <image id>`.) Failures during the start period do not count, so a container
# whose check is still red stays `starting` rather than being killed by Swarm.
scratch_image limpet-whoami-health:latest "$out/examples/whoami" 65534:65534 8000 '' \
    'HEALTHCHECK --interval=500ms --timeout=2s --start-period=60s --retries=2 CMD ["/whoami", "--probe"]'
