#!/usr/bin/env bash
# The Swarm sticky-session tutorial, run for real with limpet in Traefik's place: builds the
# images, makes this engine a single-node swarm if it is in none, deploys stack.yml, and shows
# with curl what the tutorial shows. The stack is left running; a rerun redeploys it.
#
# Needs Docker, Rust and curl. Settings (environment):
#   LIMPET_DEMO_STACK  stack name          (limpet-demo)
#   LIMPET_HTTP_PORT   limpet's entrypoint (8080, as in the tutorial)
#   LIMPET_WEB_PORT    the status page     (9090, as in the tutorial)
set -euo pipefail
cd "$(dirname "$0")/.."

stack=${LIMPET_DEMO_STACK:-limpet-demo}
export LIMPET_HTTP_PORT=${LIMPET_HTTP_PORT:-8080}
export LIMPET_WEB_PORT=${LIMPET_WEB_PORT:-9090}
url="http://127.0.0.1:$LIMPET_HTTP_PORT/"
pinned_requests=5

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'; else bold='' dim='' reset=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
say() { printf '    %s\n' "$*"; }
command_line() { printf '    %s$ %s%s\n' "$dim" "$*" "$reset"; }
fail() {
    printf '\ndemo: %s\n' "$*" >&2
    exit 1
}

for tool in docker cargo curl sha1sum; do
    command -v "$tool" >/dev/null || fail "needs \`$tool\` on the PATH"
done

# The cookie's name, computed as Traefik v1 does for a Docker service: `_` and the first five
# hex digits of SHA-1 over `_TRAEFIK_BACKEND_backend-<name>`, where the name has each run of
# other characters than letters and digits turned into one `-`.
backend="backend-$(printf '%s' "${stack}_whoami" | sed -E 's/[^[:alnum:]]+/-/g; s/^-+//; s/-+$//')"
cookie_name="_$(printf '_TRAEFIK_BACKEND_%s' "$backend" | sha1sum | cut -c1-5)"

# fetch [COOKIE]: one request; sets `served` (the container that answered, from whoami's
# `I'm <hostname>`) and `set_cookie` (the Set-Cookie header, empty if none).
fetch() {
    local response
    response=$(curl --silent --show-error --include --max-time 5 ${1:+--cookie "$1"} "$url" | tr -d '\r') ||
        return 1
    served=$(sed -n "s/^I'm //p" <<<"$response" | head -n 1)
    set_cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: //p' <<<"$response" | head -n 1)
    [ -n "$served" ]
}

step "Building the images (docker/build-images.sh)"
docker/build-images.sh | sed 's/^/    /'
LIMPET_IMAGE=$(docker image inspect --format '{{.Id}}' limpet:latest)
WHOAMI_IMAGE=$(docker image inspect --format '{{.Id}}' limpet-whoami:latest)
export LIMPET_IMAGE WHOAMI_IMAGE

step "Making sure this engine is a swarm manager"
scripts/swarm-init.sh
say "swarm: $(docker info --format '{{.Swarm.LocalNodeState}}'), $(docker info --format '{{.Swarm.Nodes}}') node(s)"

# A host-mode port held by anything but this stack's limpet would make the deploy hang.
if ! docker service inspect "${stack}_limpet" >/dev/null 2>&1 &&
    (exec 3<>"/dev/tcp/127.0.0.1/$LIMPET_HTTP_PORT") 2>/dev/null; then
    fail "port $LIMPET_HTTP_PORT is already in use; choose another with LIMPET_HTTP_PORT=..."
fi

step "Deploying stack.yml as stack '$stack'"
# The images are given by ID and never resolved, so the engine asks no registry about them.
command_line "docker stack deploy --resolve-image never -c stack.yml $stack"
# Newer clients add a notice about --detach, which older ones do not know; drop it.
docker stack deploy --resolve-image never --prune --compose-file stack.yml "$stack" 2>&1 |
    sed -e '/--detach/d' -e 's/^/    /'

step "Waiting for limpet at $url to route to both whoami containers"
declare -A cookie_of=()
deadline=$((SECONDS + 90))
while [ "${#cookie_of[@]}" -lt 2 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        printf '\n' >&2
        docker stack ps --no-trunc "$stack" >&2 || true
        printf '\nlimpet log (last lines):\n' >&2
        docker service logs --tail 30 "${stack}_limpet" >&2 || true
        fail "limpet did not route to two whoami containers within 90 s (state above)"
    fi
    if fetch "" 2>/dev/null && [ "${set_cookie%%=*}" = "$cookie_name" ]; then
        cookie=${set_cookie%%;*}
        cookie_of[$served]=$cookie
    fi
    sleep 0.5
done
say "ready"

step "1. Without a cookie, the requests take turns between the containers"
command_line "curl -i $url"
first_cookie=''
first_container=''
for _ in 1 2 3 4; do
    fetch "" || fail "no answer from $url"
    say "I'm $served    Set-Cookie: $set_cookie"
    if [ -z "$first_cookie" ]; then
        first_cookie=${set_cookie%%;*}
        first_container=$served
    fi
done
echo
say "The cookie is named $cookie_name, as Traefik v1 names it for this service ($backend);"
say "its value is the URL of the container that answered, on the overlay network."

step "2. Sending that cookie back pins the client to its container"
command_line "curl $url --cookie \"$first_cookie\"    ($pinned_requests times)"
for _ in $(seq "$pinned_requests"); do
    fetch "$first_cookie" || fail "no answer from $url"
    say "I'm $served${set_cookie:+    Set-Cookie: $set_cookie}"
    [ "$served" = "$first_container" ] || fail "expected every answer from $first_container"
    [ -z "$set_cookie" ] || fail "a valid cookie must not be replaced"
done
say "All $pinned_requests went to $first_container."

step "3. Naming the other container's URL in the cookie moves the client there"
other_container=''
for container in "${!cookie_of[@]}"; do
    [ "$container" = "$first_container" ] || other_container=$container
done
other_cookie=${cookie_of[$other_container]}
command_line "curl $url --cookie \"$other_cookie\""
fetch "$other_cookie" || fail "no answer from $url"
say "I'm $served"
[ "$served" = "$other_container" ] || fail "expected $other_container"

cat <<EOF

${bold}The stack keeps running.${reset}
    status page     http://127.0.0.1:$LIMPET_WEB_PORT/   (the table as JSON: /api)
    limpet's log    docker service logs --follow ${stack}_limpet
    add a replica   docker service scale ${stack}_whoami=3
    remove it all   docker stack rm $stack
EOF
