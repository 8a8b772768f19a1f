#!/usr/bin/env bash
# Builds limpet-compare-haproxy:latest: Debian's HAProxy binary and its shared libraries
# (found with ldd) FROM scratch, with docker/haproxy-swarm.cfg. No registry is needed; the
# image exists only to compare HAProxy with limpet on the same swarm test, the ignored
# `rolling_update_through_haproxy_for_comparison` in tests/swarm_e2e/rolling.rs (run it
# with nextest's `--run-ignored only`). Prints `<tag> <image id>`.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=$(command -v haproxy || true)
if [ -z "$binary" ]; then
    echo "build-haproxy-image: no haproxy here (apt-get install haproxy)" >&2
    exit 1
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# The binary, the dynamic loader and every library, at the paths the loader looks at.
for file in "$binary" $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$context$(dirname "$file")"
    cp -L "$file" "$context$file"
done
cp docker/haproxy-swarm.cfg "$context/haproxy.cfg"
cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY . /
EXPOSE 80
ENTRYPOINT ["$binary", "-W", "-db", "-f", "/haproxy.cfg"]
DOCKERFILE
tag=limpet-compare-haproxy:latest
# Quiet unless it fails: the legacy builder's deprecation notice is noise here.
if ! output=$(docker build --quiet --tag "$tag" "$context" 2>&1); then
    printf '%s\n' "$output" >&2
    exit 1
fi
printf '%-22s %s\n' "$tag" "$(docker image inspect --format '{{.Id}}' "$tag")"
