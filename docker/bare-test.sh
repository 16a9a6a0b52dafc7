#!/bin/bash
# The newcomer's path, where a newcomer has it: a bare Debian (the
# debootstrap base: no Rust, no make, nothing of graft's), a clean clone,
# the README's `make run`, then /, /graft/status and /graft/metrics must
# answer; then the ABI and JIT tests run there, on that release's LuaJIT
# and lua-resty-core. `make run` installs what it needs from Debian's archive (the
# container reaches it on Docker's bridge network, its own loopback
# keeping nginx's ports to itself).
#
# Crates cannot be fetched from inside a container here (the TLS of the
# way out is not one cargo trusts), so cargo reads them from a vendored
# copy (make vendor), through a configuration in the container's
# ~/.cargo, outside the clone; a real machine fetches them from crates.io.
#
#   docker/bare-test.sh BASE-IMAGE VENDOR-DIR      (make bare-test [DEBIAN=13])
set -euo pipefail
image=$1
vendor=$2
root=$(cd "$(dirname "$0")/.." && pwd)
name=graft-bare-test-$$
failures=0
checks=0

cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

inside() { docker exec "$name" "$@"; }
pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }
check() {
    local what=$1 want=$2 got
    shift 2
    if got=$("$@" 2>&1) && [[ $got == *"$want"* ]]; then
        pass "$what"
    else
        fail "$what: wanted \"$want\", got: ${got:0:400}"
    fi
}
# phase NAME COMMAND...: runs it, timed, its output in
# target/bare-test-<pid>.log, each line with the seconds since the phase
# began (the last lines shown when it fails); says how long the packages
# took to install and cargo to build, when it did.
log_dir=$root/target
mkdir -p "$log_dir"
phase() {
    local what=$1 start=$SECONDS log=$log_dir/bare-test-$$.log status
    shift
    set +e
    "$@" 2>&1 | while IFS= read -r line; do printf '%4d %s\n' $((SECONDS - start)) "$line"; done >"$log"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" = 0 ]; then
        local compiled finished
        compiled=$(awk '/ Compiling /{print $1; exit}' "$log")
        finished=$(awk '/ Finished /{print $1; exit}' "$log")
        echo "---- $what: $((SECONDS - start)) s${compiled:+ (packages and configure: $compiled s, cargo build: $((finished - compiled)) s)}"
        rm -f "$log"
    else
        echo "---- $what FAILED after $((SECONDS - start)) s:"
        tail -n 40 "$log"
        echo "(whole log: $log)"
        exit 1
    fi
}

docker run -d --name "$name" -v "$vendor:/vendor:ro" "$image" sleep infinity >/dev/null
echo "$image: $(inside sh -c '. /etc/os-release; echo "$PRETTY_NAME"')"
check "the machine is bare: no cargo, rustc, make or nginx" "bare" \
    inside sh -c 'for c in cargo rustc make nginx; do command -v $c && exit 1; done; echo bare'

# A clean clone: the files git tracks, as they are in this working tree,
# in root's home (as a newcomer would clone it).
(cd "$root" && git ls-files -z | tar --null -T - --ignore-failed-read -c 2>/dev/null) |
    docker exec -i "$name" sh -c 'mkdir -p /root/graft && tar -C /root/graft -x'
docker exec -i "$name" sh -c 'mkdir -p /root/.cargo && cat >/root/.cargo/config.toml' <<'CONFIG'
# The bare test's stand-in for crates.io (docker/bare-test.sh).
[source.crates-io]
replace-with = "vendored"

[source.vendored]
directory = "/vendor"

[net]
offline = true
CONFIG

# What a newcomer types: make first (a bare Debian has none), then make run.
phase "apt-get install make" inside sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q make'
phase "make run" inside sh -c 'cd /root/graft && make run'
echo "     $(inside sh -c 'rustc --version; nginx -v 2>&1' | tr '\n' ' ')"

check "/ answers" "HTTP/1.1 200" inside curl -sS -o /dev/null -D - --max-time 5 http://127.0.0.1:8080/
check "/graft/status is the dashboard" "<title>graft" inside curl -fsS --max-time 5 http://127.0.0.1:8080/graft/status
check "/graft/metrics counts" 'graft_requests_total{zone="localhost",module="redirects",path="shadow_match"}' \
    inside sh -c 'curl -sS -o /dev/null --max-time 5 -H "Host: localhost" "http://127.0.0.1:8080/old?a=1"; curl -fsS --max-time 5 http://127.0.0.1:8080/graft/metrics'
check "the README's redirect, in shadow mode" "Location: /new?a=1" \
    inside curl -sS -o /dev/null -D - --max-time 5 -H "Host: localhost" "http://127.0.0.1:8080/old?a=1"
check "make stop stops it" "stopped" inside sh -c 'cd /root/graft && make stop'

# The Lua side on this release's LuaJIT and lua-resty-core, against the
# module make run built: the ABI test (graft.h, the Lua cdef and the
# module's exports agree; a module of another ABI refused at start) and
# the JIT test (graft's pipeline compiles with no trace aborted in it).
# On Debian 12 `make test` runs them on the host (CI's own machine), so
# here they run on the other releases only (BARE_ABI_JIT=1 forces them).
release=$(inside sh -c '. /etc/os-release; echo "$VERSION_ID"')
if [ "$release" != 12 ] || [ "${BARE_ABI_JIT:-}" = 1 ]; then
    phase "the ABI and JIT tests" inside sh -c 'cd /root/graft && cargo test --release -p graft-tests --test abi --test jit 2>&1 | tee /root/abi-jit.log'
    check "the ABI and JIT tests ran and passed" "all passed" inside awk '/^test result:/ { p += $4; f += $6 } END { print (p > 0 && f == 0) ? "all passed: " p : p " passed, " f " failed" }' /root/abi-jit.log
fi

echo "bare test: $((checks - failures)) passed, $failures failed"
[ "$failures" = 0 ] && [ "$checks" -gt 0 ]
