# Sourced by the scripts that need programs from Debian's packages (scripts/test.sh,
# scripts/build-pgo.sh, bench/run.sh):
#
#   debian_install TOOL=PACKAGE...   installs the package of each TOOL not found
#
# Returns 0 when every TOOL is there afterwards. Returns 1 when one is missing and cannot be
# installed: not a Debian machine, not root and no sudo, or apt-get failed (its last lines
# are printed). The packages' services are not started: the scripts run their own instances
# on their own ports, and a system nginx or HAProxy would only take CPU from them.
debian_install() {
    local missing=() pair
    for pair in "$@"; do
        debian_has "${pair%%=*}" || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo=(sudo)
    fi
    echo "$(basename "$0"): installing from Debian: ${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d made_policy=0 log status=0
    if [ ! -e "$policy" ]; then
        # invoke-rc.d asks this file, and 101 means "action forbidden".
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null &&
            "${sudo[@]}" chmod +x "$policy" && made_policy=1
    fi
    log=$(mktemp)
    # Try the package lists already there first: `apt-get update` is the slow part.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >"$log" 2>&1 ||
        { "${sudo[@]}" apt-get update -qq >>"$log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >>"$log" 2>&1; } ||
        status=1
    [ "$made_policy" = 1 ] && "${sudo[@]}" rm -f "$policy"
    if [ "$status" != 0 ]; then
        echo "$(basename "$0"): apt-get install ${missing[*]} failed:" >&2
        tail -n 5 "$log" >&2
    fi
    rm -f "$log"
    for pair in "$@"; do
        debian_has "${pair%%=*}" || status=1
    done
    return "$status"
}

# debian_has TOOL: whether TOOL runs, on PATH or in the sbin directories that a non-root
# PATH lacks (haproxy is in /usr/sbin).
debian_has() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}
