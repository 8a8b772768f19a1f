#!/usr/bin/env bash
# Runs every check limpet has, as CI does (.ci/run calls this script):
#
#   1. cargo fmt --check
#   2. cargo clippy --all-targets -- -D warnings
#   3. cargo nextest run: every test that needs no Docker; cargo test --doc
#   4. with Docker: the end-to-end tests on a real swarm (tests/swarm_e2e/), after making the
#      engine a single-node swarm if it is in none and building the images
#      (docker/build-images.sh). Without Docker they are skipped, saying so; on CI
#      (CI=true) a missing Docker is a failure, because CI has one.
#
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
# Needs Rust (with rustfmt and clippy), cargo-nextest and, for step 4, Docker.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -t 1 ]; then bold=$'\e[1m' reset=$'\e[0m'; else bold='' reset=''; fi
failed=()
run() {
    printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"
    "$@" || failed+=("$*")
}

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test.sh: cargo-nextest is missing; install it with: cargo install cargo-nextest --locked" >&2
    exit 1
fi
# rustup's minimal profile leaves these two out.
for component in rustfmt clippy; do
    subcommand=${component/rustfmt/fmt}
    if ! cargo "$subcommand" --version >/dev/null 2>&1; then
        rustup component add "$component" || exit 1
    fi
done

# Real peers some tests talk to: h2load (tests/integration/tls.rs) and redis-server
# (tests/integration/l4.rs). They come from Debian; on a machine without them the tests print
# SKIPPED for that part.
# shellcheck source=scripts/debian.sh
. scripts/debian.sh
debian_install h2load=nghttp2-client redis-server=redis-server ||
    echo "test.sh: no h2load or redis-server; the tests that need them will say SKIPPED" >&2

# A clean CI checkout gains nothing from incremental builds, and their caches would be the
# largest thing on its disk; the free space is printed because a full disk is what once
# broke CI, as a linker "Bus error".
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi
df -h . | sed 's/^/test.sh: disk: /'

run cargo fmt --all --check
run cargo clippy --locked --all-targets -- -D warnings
# The Swarm tests skip themselves without LIMPET_SWARM_TESTS; leaving them out here keeps the
# report free of tests that "pass" by skipping.
run cargo nextest run --locked --no-fail-fast -E 'not binary(swarm_e2e)'
# nextest does not run documentation examples.
run cargo test --locked --doc

swarm_tests() {
    scripts/swarm-init.sh || return 1
    docker/build-images.sh || return 1
    LIMPET_IMAGE_ID=$(docker image inspect --format '{{.Id}}' limpet:latest) &&
        WHOAMI_IMAGE_ID=$(docker image inspect --format '{{.Id}}' limpet-whoami:latest) &&
        WHOAMI_HEALTH_IMAGE_ID=$(docker image inspect --format '{{.Id}}' limpet-whoami-health:latest) ||
        return 1
    # --no-capture runs them one at a time (their timings mean more on a quiet engine) and
    # shows what they measured.
    LIMPET_SWARM_TESTS=1 LIMPET_IMAGE_ID=$LIMPET_IMAGE_ID WHOAMI_IMAGE_ID=$WHOAMI_IMAGE_ID \
        WHOAMI_HEALTH_IMAGE_ID=$WHOAMI_HEALTH_IMAGE_ID \
        cargo nextest run --locked --no-fail-fast --no-capture -E 'binary(swarm_e2e)'
}

if docker_error=$(docker info 2>&1 >/dev/null); then
    run swarm_tests
elif [ "${CI:-}" = true ]; then
    printf '\n%s==> Swarm tests%s\n' "$bold" "$reset"
    echo "test.sh: Docker is not reachable, and CI must run the Swarm tests: $docker_error" >&2
    failed+=("Swarm tests (no Docker)")
else
    printf '\n%s==> Swarm tests: skipped%s\n' "$bold" "$reset"
    echo "Docker is not reachable, so the end-to-end tests on a real swarm did not run:"
    echo "  $docker_error" | head -n 3
fi

echo
du -sh "$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')" 2>/dev/null |
    sed 's/^/test.sh: build output: /'
if [ "${#failed[@]}" -gt 0 ]; then
    echo "${bold}test.sh: FAILED:${reset}"
    printf '  %s\n' "${failed[@]}"
    exit 1
fi
echo "${bold}test.sh: all checks passed${reset}"
