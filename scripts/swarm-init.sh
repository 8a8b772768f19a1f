#!/usr/bin/env bash
# Makes sure this Docker engine is a swarm manager. On an engine outside any swarm, creates a
# single-node swarm advertising on loopback: enough for the demo and the tests, and it sends
# nothing to other machines. An engine already in a swarm is left as it is.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
    echo "swarm-init: cannot reach the Docker engine (is dockerd running, and may $(id -un) use it?)" >&2
    exit 1
fi

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$state" in
    active) ;;
    inactive)
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        echo "swarm-init: created a single-node swarm (undo with: docker swarm leave --force)" >&2
        ;;
    *)
        echo "swarm-init: this engine's swarm state is '$state'; settle it first (docker info shows why)" >&2
        exit 1
        ;;
esac

# Services can only be created, and read by limpet, on a manager.
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
    echo "swarm-init: this engine is a swarm worker; run this on a manager node" >&2
    exit 1
fi
