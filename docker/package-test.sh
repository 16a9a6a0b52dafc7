#!/bin/bash
# Tests graft where users install it: the package, installed by the image
# build with `apt install` into a fresh debian:12 or debian:13 (make
# package-test DEBIAN=13; the image says which), runs in a container with
# no network at all (its nginx answers on the container's own loopback),
# and every check runs inside it. Then the package is removed the way the
# README says to go back, and nginx must still start and serve.
#
# Debian's Prometheus (the second image, docker/prometheus) runs in the
# same network namespace, scrapes graft and must fire graft's alert for
# the refused configuration.
#
# Then the fleet: graft-agent from its package runs beside nginx against
# Debian's etcd (the third image, docker/fleet-test.Dockerfile), still with
# no network: a configuration and a kill switch from etcd reach nginx, and
# with etcd gone nginx serves on.
#
# Then graft-edge: its image (docker/edge.Dockerfile, the compose service)
# in front of graft's nginx, in the first container's network namespace;
# and its package, installed with apt into the fleet image, checked there:
# its user, secrets and settings, its unit (systemd's analyzer), its
# `--check`, the binary started as the unit starts it in front of that
# container's nginx, its admin listener, a reload, its log rotated, a
# stop by its pid, and a purge. Then, where systemd can be a container's
# init here, graft-edge.service itself under systemd, its hardening
# applied: start, reload, a refused file, a crash, log rotation, stop.
#
#   docker/package-test.sh IMAGE PROMETHEUS-IMAGE FLEET-IMAGE EDGE-IMAGE  (make package-test)
set -euo pipefail
image=$1
prometheus=$2
fleet_image=$3
edge_image=$4
here=$(cd "$(dirname "$0")" && pwd)
name=graft-package-test-$$
failures=0
checks=0

shared=$(mktemp -d)
cleanup() {
    rm -rf "$shared"
    docker rm -f "$name-prometheus" "$name-edge-image" "$name" "$name-fleet" "$name-edge" \
        "$name-systemd" >/dev/null 2>&1 || true
}
trap cleanup EXIT

inside() { docker exec "$name" "$@"; }
pass() { checks=$((checks + 1)); echo "ok   $1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }
# check NAME EXPECTED-SUBSTRING COMMAND...: the command's output holds it.
check() {
    local what=$1 want=$2 got
    shift 2
    if got=$("$@" 2>&1) && [[ $got == *"$want"* ]]; then
        pass "$what"
    else
        fail "$what: wanted \"$want\", got: ${got:0:400}"
    fi
}
# status URL [curl args]: the status code and headers of one request.
status() { inside curl -sS -o /dev/null -D - --max-time 5 "$@"; }

# nginx is started by the test (not as the container's first process), so
# that it can be stopped and started again after the package is removed.
docker run -d --name "$name" --network none "$image" sleep infinity >/dev/null
echo "$image: $(inside sh -c '. /etc/os-release; echo "$PRETTY_NAME, $(nginx -v 2>&1 | sed "s/^nginx version: //"), $(dpkg-query -W -f="\${Package} \${Version}" libnginx-mod-http-graft)"')"
inside sh -c 'rm -f /var/log/nginx/*.log && nginx'
# Up when the metrics answer.
for _ in $(seq 50); do
    inside curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8080/graft/metrics 2>/dev/null && break
    sleep 0.2
done

check "the package links the module after the Lua module's" "60-mod-http-graft.conf" \
    inside ls /etc/nginx/modules-enabled/
check "nginx -t checks graft's file" "test is successful" inside nginx -t
check "/graft/status is the dashboard" "<title>graft" inside curl -fsS http://127.0.0.1:8080/graft/status
check "/graft/metrics counts by zone and module" 'graft_requests_total{zone="*",module="waf",path="rust"}' \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics
check "a page is served, with the headers module's header" "X-Frame-Options: DENY" \
    status http://127.0.0.1:8080/
check "the WAF blocks a rule's path" "HTTP/1.1 403" status http://127.0.0.1:8080/admin/users
check "the WAF blocks SQL injection in an argument" "HTTP/1.1 403" \
    status "http://127.0.0.1:8080/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"
check "the WAF blocks SQL injection in a form body" "HTTP/1.1 403" \
    status -X POST -H "Content-Type: application/x-www-form-urlencoded" \
    --data "q=1%27+UNION+SELECT+password+FROM+users--" http://127.0.0.1:8080/
check "a redirect answers (shadow: Lua serves, Rust compared)" "Location: /new" status http://127.0.0.1:8080/old
# Two requests reached the redirects step (/ and /old; the WAF answered
# the others): both compared, both alike.
check "the shadow comparisons matched" 'graft_requests_total{zone="*",module="redirects",path="shadow_match"} 2' \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics
check "no shadow comparison differed" 'graft_requests_total{zone="*",module="redirects",path="shadow_diff"} 0' \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics

# Prometheus scrapes graft on the loopback they share.
docker run -d --name "$name-prometheus" --network "container:$name" "$prometheus" >/dev/null
query() { inside curl -fsS --max-time 2 "http://127.0.0.1:9090/api/v1/$1" 2>/dev/null || true; }
for _ in $(seq 100); do
    [[ $(query 'query?query=up%7Bjob%3D%22graft%22%7D') == *'"value":['*',"1"]'* ]] && break
    sleep 0.3
done
check "Prometheus scrapes /graft/metrics" '"value":[' \
    query 'query?query=graft_requests_total%7Bmodule%3D%22waf%22%2Cpath%3D%22rust%22%7D'
check "Prometheus has graft's alert rules" '"name":"GraftConfigurationRefused"' query rules

# A bad graft file: refused by nginx -t, a reload and a live apply, naming
# the field; the running configuration goes on serving.
inside cp /etc/nginx/graft.json /etc/nginx/graft.json.good
inside sed -i 's/"op": "prefix"/"op": "prefixx"/' /etc/nginx/graft.json
check "nginx -t refuses a bad graft file, naming the field" "rules[0].when" inside sh -c 'nginx -t 2>&1; true'
check "a live apply refuses it" "refused, the running configuration goes on" \
    inside sh -c 'curl -sS -H "Authorization: Bearer $(cat /etc/graft/admin.token)" -X POST http://127.0.0.1:8081/graft/admin/apply'
check "the admin API refuses a call without its token" "HTTP/1.1 401" \
    inside curl -sS -o /dev/null -D - -X POST http://127.0.0.1:8081/graft/admin/apply
check "... and a browser's, with it" "HTTP/1.1 403" \
    inside sh -c 'curl -sS -o /dev/null -D - -H "Origin: http://evil.example" -H "Authorization: Bearer $(cat /etc/graft/admin.token)" -X POST http://127.0.0.1:8081/graft/admin/apply'
check "the package's token is for root and the agent's group only" "640 root graft-agent" \
    inside stat -c '%a %U %G' /etc/graft/admin.token
# `nginx -s reload` (systemd's reload, Debian's init script) checks the
# file itself and signals nothing: refused, and the file shows unapplied.
check "nginx -s reload refuses it" "rules[0].when" inside sh -c 'nginx -s reload 2>&1; true'
check "the file on disk shows unapplied" "graft_configuration_file_unapplied{} 1" \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics
# A reload signal the master gets (kill -HUP) is refused by the master.
inside sh -c ': > /var/log/nginx/error.log; kill -HUP "$(cat /run/nginx.pid)"'
sleep 1
check "a reload signal is refused by the master, naming the field" "rules[0].when" \
    inside grep emerg /var/log/nginx/error.log
check "the running configuration still blocks" "HTTP/1.1 403" status http://127.0.0.1:8080/admin/users
check "the refusal is counted" "graft_configuration_refused_total{} 2" \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics
# graft's own test module is not in the package.
inside sh -c 'printf "%s" "{ \"zones\": { \"*\": { \"modules\": [ { \"module\": \"probe\", \"mode\": \"rust\" } ] } } }" > /etc/nginx/graft.json'
check "the package has no test module (probe)" 'module #0 "probe": field "module": unknown module; known: redirects, url_normalize, ip_access, waf, headers, html_rewrite, request_log, rate_limit in' \
    inside sh -c 'nginx -t 2>&1; true'
inside mv /etc/nginx/graft.json.good /etc/nginx/graft.json
check "the good file back on disk is the one serving" "graft_configuration_file_unapplied{} 0" \
    inside curl -fsS http://127.0.0.1:8080/graft/metrics
for _ in $(seq 100); do
    [[ $(query 'query?query=ALERTS%7Balertname%3D%22GraftConfigurationRefused%22%2Calertstate%3D%22firing%22%7D') == *'"alertname":"GraftConfigurationRefused"'* ]] && break
    sleep 0.3
done
check "Prometheus fires GraftConfigurationRefused" '"alertname":"GraftConfigurationRefused"' \
    query 'query?query=ALERTS%7Balertname%3D%22GraftConfigurationRefused%22%2Calertstate%3D%22firing%22%7D'
docker rm -f "$name-prometheus" >/dev/null

# graft-edge's image, as docker/compose.yaml runs it: in graft's network
# namespace, in front of its nginx, with the same graft file, and its key
# from a volume (compose's is the one nginx reads).
(umask 077 && head -c 32 /dev/urandom | base64 >"$shared/edge.key")
docker run -d --name "$name-edge-image" --network "container:$name" \
    -v "$here/../nginx/example/graft.json:/etc/nginx/graft.json:ro" \
    -v "$shared:/etc/graft/edge-shared:ro" -e GRAFT_EDGE_KEY_FROM=/etc/graft/edge-shared/edge.key \
    "$edge_image" >/dev/null
for _ in $(seq 50); do
    inside curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8090/ 2>/dev/null && break
    sleep 0.2
done
check "graft-edge's image serves in front of graft's nginx, with the headers module's header" \
    "X-Frame-Options: DENY" status http://127.0.0.1:8090/
check "... its WAF blocks a rule's path" "HTTP/1.1 403" status http://127.0.0.1:8090/admin/users
check "... it runs as graft-edge, with no capability" "graft-edge 0000000000000000" \
    docker exec "$name-edge-image" sh -c 'echo "$(stat -c %U /proc/1) $(sed -n "s/^CapEff:\t//p" /proc/1/status)"'
check "... with the key it was given and a token made at its start, for root and its group only" \
    "640 root graft-edge $(cat "$shared/edge.key")
640 root graft-edge" docker exec "$name-edge-image" sh -c \
    'echo "$(stat -c "%a %U %G" /etc/graft/edge.key) $(cat /etc/graft/edge.key)"; stat -c "%a %U %G" /etc/graft/edge-admin.token'
docker rm -f "$name-edge-image" >/dev/null

# Going back: take graft's lines out, remove the package; nginx still starts.
inside rm /etc/nginx/sites-enabled/graft
inside ln -s ../sites-available/default /etc/nginx/sites-enabled/default
# (The image has no pgrep: the master is waited for by its pid.)
stop_nginx() {
    local pid
    pid=$(inside cat /run/nginx.pid 2>/dev/null) || return 0
    inside nginx -s quit 2>/dev/null
    for _ in $(seq 50); do inside test -e "/proc/$pid" || break; sleep 0.2; done
}
stop_nginx
# The module loaded and no site using it: nginx serves as before.
inside nginx
check "with the module loaded and no graft lines, nginx serves as before" "HTTP/1.1 200" \
    status http://127.0.0.1/
check "... and has the module loaded" "ngx_http_graft_module.so" \
    inside sh -c 'cat /proc/$(cat /run/nginx.pid)/maps'
stop_nginx
check "the package removes" "Removing libnginx-mod-http-graft" \
    inside env DEBIAN_FRONTEND=noninteractive apt-get remove -y libnginx-mod-http-graft
check "the module is out of nginx's configuration" "60-mod-http-graft.conf.removed" \
    inside ls /etc/nginx/modules-enabled/
check "nginx -t passes without graft" "test is successful" inside nginx -t
inside nginx
check "nginx serves without graft" "HTTP/1.1 200" status http://127.0.0.1/

# The fleet, in a container of its own.
docker run -d --name "$name-fleet" --network none "$fleet_image" sleep infinity >/dev/null
in_fleet() { docker exec "$name-fleet" "$@"; }
fleet_status() { in_fleet curl -sS -o /dev/null -D - --max-time 5 "$@"; }
fleet_metrics() { in_fleet curl -fsS --max-time 5 http://127.0.0.1:8080/graft/metrics; }
# until NAME EXPECTED COMMAND...: waits up to 15 s for the output to hold it.
until_has() {
    local want=$1
    shift
    for _ in $(seq 75); do
        [[ $("$@" 2>&1) == *"$want"* ]] && return 0
        sleep 0.2
    done
}
check "the package made the agent's user" "graft-agent" in_fleet id -un graft-agent
check "... and its state directory, its own" "graft-agent graft-agent" \
    in_fleet stat -c '%U %G' /var/lib/graft-agent
# An upgrade from an agent that ran as root keeps its settings: told.
in_fleet sed -i.orig 's#--file [^ ]*#--file /etc/nginx/graft.json#' /etc/default/graft-agent
check "an upgrade keeping a graft file the agent may not write says so" \
    "cannot write it" in_fleet /var/lib/dpkg/info/graft-agent.postinst configure 0.1.0-1
in_fleet mv /etc/default/graft-agent.orig /etc/default/graft-agent
# A fleet server's nginx starts with the file the agent keeps, seeded with
# its own, as the package's /etc/default settings say.
in_fleet sh -c 'install -o graft-agent -m 644 /etc/nginx/graft.json /var/lib/graft-agent/graft.json &&
    sed -i "s#graft_config /etc/nginx/graft.json;#graft_config /var/lib/graft-agent/graft.json;#" \
        /etc/nginx/sites-available/graft && rm -f /var/log/nginx/*.log && nginx'
in_fleet sh -c 'setsid etcd --data-dir /tmp/etcd --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 >/tmp/etcd.log 2>&1 </dev/null & echo $! >/tmp/etcd.pid'
until_has "is healthy" in_fleet etcdctl endpoint health
# As graft-agent.service runs it: its user, no capabilities, the package's
# /etc/default settings (and once, the graft file where it may not write).
# as_agent [SED]: the agent as the unit runs it, its settings edited by SED.
as_agent() {
    in_fleet sh -c "set -a; . /etc/default/graft-agent; set +a;
        args=\$(echo \"\$GRAFT_AGENT_ARGS\" | sed '${1:-}');
        setsid setpriv --reuid=graft-agent --regid=graft-agent --init-groups \
            --inh-caps=-all --bounding-set=-all graft-agent run \$args \
            >/tmp/agent.log 2>&1 </dev/null & echo \$! >/tmp/agent.pid"
}
as_agent 's#--file [^ ]*#--file /etc/nginx/graft.json#'
until_has '"name":' in_fleet graft-agent status
check "the agent's server has its key in etcd, under its host name" \
    "\"name\":\"$(in_fleet hostname)\"" in_fleet graft-agent status
in_fleet sh -c "sed 's#\"/admin\"#\"/private\"#' /usr/share/graft/examples/graft.json >/tmp/new.json"
check "graft-agent put checks and writes the configuration" "the fleet's configuration is" \
    in_fleet graft-agent put /tmp/new.json
until_has "HTTP/1.1 403" fleet_status http://127.0.0.1:8080/private/x
check "a configuration from etcd is served" "HTTP/1.1 403" fleet_status http://127.0.0.1:8080/private/x
until_has '"file_error":"/etc/nginx/graft.json' in_fleet graft-agent status
check "a graft file the agent may not write is said in the server's key" \
    '"file_error":"/etc/nginx/graft.json: Permission denied' in_fleet graft-agent status
check "... and nginx says its graft file is not what it serves" \
    "graft_configuration_file_unapplied{} 1" fleet_metrics
in_fleet sh -c 'kill "$(cat /tmp/agent.pid)"'
as_agent
in_fleet sh -c "sed 's#\"/admin\"#\"/hidden\"#' /usr/share/graft/examples/graft.json >/tmp/new.json"
in_fleet graft-agent put /tmp/new.json >/dev/null
until_has "HTTP/1.1 403" fleet_status http://127.0.0.1:8080/hidden/x
check "the agent, as its own user: a configuration from etcd is served" "HTTP/1.1 403" \
    fleet_status http://127.0.0.1:8080/hidden/x
check "... and kept in the graft file nginx starts with" '"/hidden"' \
    in_fleet cat /var/lib/graft-agent/graft.json
check "... the agent's own" "graft-agent" in_fleet stat -c '%U' /var/lib/graft-agent/graft.json
until_has '"file_error":null' in_fleet graft-agent status
check "... and the server's key says nothing is wrong with it" '"file_error":null' \
    in_fleet graft-agent status
check "... nor nginx" "graft_configuration_file_unapplied{} 0" fleet_metrics
check "the agent reports to the metrics" "graft_fleet_etcd_up{} 1" fleet_metrics
in_fleet graft-agent kill waf >/dev/null
until_has 'graft_module_killed{zone="*",module="waf"} 1' fleet_metrics
check "a kill switch from etcd sends the WAF back to Lua" 'graft_module_killed{zone="*",module="waf"} 1' \
    fleet_metrics
check "... whose Lua side blocks too" "HTTP/1.1 403" fleet_status http://127.0.0.1:8080/hidden/x
in_fleet sh -c 'kill "$(cat /tmp/etcd.pid)"'
until_has "graft_fleet_etcd_up{} 0" fleet_metrics
check "etcd gone: the metrics say so" "graft_fleet_etcd_up{} 0" fleet_metrics
check "etcd gone: nginx serves the configuration from etcd" "HTTP/1.1 403" \
    fleet_status http://127.0.0.1:8080/hidden/x
check "graft-agent's unit is installed, not enabled" "ExecStart=/usr/bin/graft-agent run" \
    in_fleet cat /lib/systemd/system/graft-agent.service
verified=$(in_fleet systemd-analyze verify /lib/systemd/system/graft-agent.service 2>&1) \
    && [ -z "$verified" ] && pass "... and systemd reads it without a complaint" \
    || fail "... and systemd reads it without a complaint: $verified"
# (--threshold is in tenths: 20 is an exposure of 2.0.)
check "... its exposure, as systemd rates it, is low" "OK" \
    in_fleet systemd-analyze security --offline=yes --threshold=20 /lib/systemd/system/graft-agent.service
docker rm -f "$name-fleet" >/dev/null

# graft-edge from its package, in a container of its own: the fleet image
# has graft's nginx, systemd's analyzer, logrotate and the graft-edge
# package, installed with apt.
docker run -d --name "$name-edge" --network none "$fleet_image" sleep infinity >/dev/null
in_edge() { docker exec "$name-edge" "$@"; }
edge_status() { in_edge curl -sS -o /dev/null -D - --max-time 5 "$@"; }
unit=/lib/systemd/system/graft-edge.service
check "graft-edge is installed" "graft-edge $(in_edge dpkg-query -W -f='${Version}' libnginx-mod-http-graft)" \
    in_edge dpkg-query -W -f='${Package} ${Version}' graft-edge
check "... in /usr/sbin" "graft-edge [--check | --upgrade]" in_edge sh -c '/usr/sbin/graft-edge --help 2>&1; true'
check "the package made graft-edge's user" "graft-edge" in_edge id -un graft-edge
check "... its settings and logrotate snippet are conffiles" "/etc/graft/edge.json
/etc/logrotate.d/graft-edge" in_edge cat /var/lib/dpkg/info/graft-edge.conffiles
check "... its hand-off key and admin token are for root and its group only" \
    "640 root graft-edge
640 root graft-edge" in_edge stat -c '%a %U %G' /etc/graft/edge.key /etc/graft/edge-admin.token
check "... its unit is installed, not enabled" "disabled" in_edge sh -c 'systemctl is-enabled graft-edge 2>&1; true'
check "... and nothing of it was started" "none" \
    in_edge sh -c 'grep -lx graft-edge /proc/[0-9]*/comm 2>/dev/null || echo none'
check "... its shipped settings listen on loopback only" '"listen": ["127.0.0.1:8090"]' \
    in_edge cat /etc/graft/edge.json
# An upgrade (the postinst again) keeps the secrets nginx shares, and
# takes back what every local user could read.
secrets_before=$(in_edge md5sum /etc/graft/edge.key /etc/graft/edge-admin.token)
in_edge chmod 0644 /etc/graft/edge.key
in_edge /var/lib/dpkg/info/graft-edge.postinst configure "$(in_edge dpkg-query -W -f='${Version}' graft-edge)"
check "an upgrade keeps its key and token" "$secrets_before" \
    in_edge md5sum /etc/graft/edge.key /etc/graft/edge-admin.token
check "... and makes a world-readable key its group's again" "640 root graft-edge" \
    in_edge stat -c '%a %U %G' /etc/graft/edge.key
verified=$(in_edge systemd-analyze verify "$unit" 2>&1) && [ -z "$verified" ] \
    && pass "graft-edge's unit: systemd reads it without a complaint" \
    || fail "graft-edge's unit: systemd reads it without a complaint: $verified"
check "... its exposure, as systemd rates it, is low" "OK" \
    in_edge systemd-analyze security --offline=yes --threshold=20 "$unit"
# The unit's own command lines, run as it runs them: its user and group,
# its one capability (ambient), no new privileges, its umask; what its
# RuntimeDirectory= and LogsDirectory= make, made.
pre=$(in_edge sed -n 's/^ExecStartPre=//p' "$unit")
start=$(in_edge sed -n 's/^ExecStart=//p' "$unit")
reload=$(in_edge sed -n 's/^ExecReload=//p' "$unit")
as_unit() {
    in_edge sh -c "umask 0027; setpriv --reuid=graft-edge --regid=graft-edge --init-groups --no-new-privs \
        --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
        --bounding-set=-all,+net_bind_service $*"
}
check "graft-edge --check passes with the shipped settings, as the unit runs it" "are fine" as_unit "$pre"
# FL1: the container's nginx with graft, taking graft-edge's hand-off (its
# key, the client's address from X-Forwarded-For), as README says.
in_edge sh -c 'printf "%s\n" "graft_edge_key /etc/graft/edge.key;" "set_real_ip_from 127.0.0.1;" \
    "real_ip_header X-Forwarded-For;" >/etc/nginx/conf.d/graft-edge.conf && rm -f /var/log/nginx/*.log && nginx'
in_edge install -d -o graft-edge -g graft-edge -m 750 /run/graft-edge
# (A shell beside it keeps its exit status: the container's first process
# reaps no child.)
in_edge sh -c "umask 0027; setsid sh -c 'setpriv --reuid=graft-edge --regid=graft-edge --init-groups \
    --no-new-privs --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service $start & echo \$! >/tmp/edge.pid; wait \$!; echo \$? >/tmp/edge.status' \
    >/tmp/edge.log 2>&1 </dev/null &"
for _ in $(seq 50); do in_edge test -s /tmp/edge.pid && break; sleep 0.1; done
edge_pid=$(in_edge cat /tmp/edge.pid)
for _ in $(seq 50); do
    in_edge curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8090/ 2>/dev/null && break
    sleep 0.2
done
check "graft-edge runs as its user, with the one capability the unit gives" \
    "graft-edge 0000000000000400" in_edge sh -c "echo \"\$(stat -c %U /proc/$edge_pid) \$(sed -n 's/^CapEff:\t//p' /proc/$edge_pid/status)\""
check "a page through graft-edge, from nginx, with the headers module's header" "X-Frame-Options: DENY" \
    edge_status http://127.0.0.1:8090/
check "graft-edge's WAF blocks a rule's path" "HTTP/1.1 403" edge_status http://127.0.0.1:8090/admin/users
check "a step in shadow goes to nginx (the redirect)" "Location: /new" edge_status http://127.0.0.1:8090/old
# Three requests were passed from the redirects step (in shadow: nginx's):
# the first that found graft-edge up, /, /old.
check "nginx accepted graft-edge's hand-offs (the key the package made)" \
    'graft_edge_handoffs_total{result="accepted"} 3' in_edge curl -fsS http://127.0.0.1:8080/graft/metrics
check "graft-edge's /graft/metrics, on its admin listener" 'graft_edge_passed_total{zone="*",module="redirects",reason="mode"} 3' \
    in_edge curl -fsS http://127.0.0.1:8091/graft/metrics
check "... its admin API with the package's token" "HTTP/1.1 200" \
    in_edge sh -c 'curl -sS -o /dev/null -D - -H "Authorization: Bearer $(cat /etc/graft/edge-admin.token)" http://127.0.0.1:8091/graft/admin/metrics'
check "... and without it, refused" "HTTP/1.1 401" edge_status http://127.0.0.1:8091/graft/admin/metrics
check "its access log: graft-edge served the block, nginx the rest" "\"GET /admin/users HTTP/1.1\" 403" \
    in_edge cat /var/log/graft-edge/access.log
check "... made for its user and group only" "640 graft-edge graft-edge" \
    in_edge stat -c '%a %U %G' /var/log/graft-edge/access.log
# systemctl reload, as the unit runs it: a live apply of the graft file.
check "the unit's reload applies the graft file again" "graft-edge: reloaded" as_unit "$reload"
in_edge cp /etc/nginx/graft.json /tmp/graft.json.good
in_edge sed -i 's/"op": "prefix"/"op": "prefixx"/' /etc/nginx/graft.json
check "... and fails on a bad one, naming the field" "rules[0].when" as_unit "$reload; true"
check "... which the unit's --check refuses with status 1 (not restarted)" "status 1" \
    as_unit "$pre; echo status \$?"
check "... while the running configuration blocks on" "HTTP/1.1 403" edge_status http://127.0.0.1:8090/admin/users
in_edge cp /tmp/graft.json.good /etc/nginx/graft.json
in_edge chmod 0644 /etc/graft/edge.key
check "graft-edge refuses a hand-off key every local user may read" 'field "fl1_key_file"' as_unit "$pre; true"
in_edge chmod 0640 /etc/graft/edge.key
# logrotate with the package's snippet, then SIGUSR1 (its postrotate,
# under systemd): the new file takes the next request.
check "logrotate rotates the access log with the package's snippet" "access.log.1" \
    in_edge sh -c 'logrotate -f /etc/logrotate.d/graft-edge 2>&1; ls /var/log/graft-edge'
in_edge sh -c "kill -USR1 $edge_pid"
sleep 0.5
edge_status http://127.0.0.1:8090/after-rotation >/dev/null
sleep 0.5
check "... and graft-edge writes the new file after SIGUSR1" "GET /after-rotation" \
    in_edge cat /var/log/graft-edge/access.log
in_edge sh -c "kill -TERM $edge_pid"
for _ in $(seq 75); do in_edge test -s /tmp/edge.status && break; sleep 0.2; done
# Exit status 0: the unit's Restart=on-failure leaves a stop stopped.
check "graft-edge stops on SIGTERM, by its pid, with status 0, within the unit's stop timeout" "status 0" \
    in_edge sh -c 'echo "status $(cat /tmp/edge.status 2>/dev/null || echo none: still running)"'
check "... and its listener is closed" "Failed to connect" \
    in_edge sh -c 'curl -sS -o /dev/null --max-time 5 http://127.0.0.1:8090/ 2>&1; true'
check "the package purges" "Purging configuration files for graft-edge" \
    in_edge env DEBIAN_FRONTEND=noninteractive apt-get purge -y graft-edge
check "... its secrets and settings with it, not nginx's token" "[admin.token ]" \
    in_edge sh -c 'echo "[$(ls /etc/graft | tr "\n" " ")]"'
check "... nor its logrotate snippet and logs" "gone" \
    in_edge sh -c 'test -e /etc/logrotate.d/graft-edge || test -e /var/log/graft-edge || echo gone'
docker rm -f "$name-edge" >/dev/null

# graft-edge.service under systemd, the container's init: it needs
# CAP_SYS_ADMIN, no seccomp filter and the host's cgroups (read-only), and
# still no network.
skipped=0
docker run -d --name "$name-systemd" --network none --cap-add SYS_ADMIN \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
    "$fleet_image" /lib/systemd/systemd >/dev/null 2>&1 || true
in_sd() { docker exec "$name-systemd" "$@"; }
sd_status() { in_sd curl -sS -o /dev/null -D - --max-time 5 "$@"; }
# (Its bus comes up a moment after the container.)
for _ in $(seq 50); do
    booted=$(in_sd timeout 30 systemctl is-system-running --wait 2>&1 || true)
    [[ $booted == running || $booted == degraded ]] && break
    sleep 0.2
done
if [[ $booted == running || $booted == degraded ]]; then
    # nginx's logs as files (the image sends them to the container's
    # stderr), taking graft-edge's hand-off.
    in_sd sh -c 'rm -f /var/log/nginx/*.log && printf "%s\n" "graft_edge_key /etc/graft/edge.key;" \
        "set_real_ip_from 127.0.0.1;" "real_ip_header X-Forwarded-For;" >/etc/nginx/conf.d/graft-edge.conf &&
        systemctl restart nginx'
    check "under systemd: graft-edge.service starts" "active" \
        in_sd sh -c 'systemctl enable --now graft-edge 2>/dev/null; systemctl is-active graft-edge'
    main_pid() { in_sd systemctl show -p MainPID --value graft-edge; }
    pid=$(main_pid)
    check "... as its user, no new privileges, CAP_NET_BIND_SERVICE alone" \
        "graft-edge 1 0000000000000400" in_sd sh -c "echo \$(stat -c %U /proc/$pid) \
            \$(sed -n 's/^NoNewPrivs:\t//p' /proc/$pid/status) \$(sed -n 's/^CapEff:\t//p' /proc/$pid/status)"
    check "... the file system read-only to it (ProtectSystem=strict)" "ro," \
        in_sd awk '$5 == "/" { print $6 "," }' "/proc/$pid/mountinfo"
    check "... serving in front of nginx" "X-Frame-Options: DENY" sd_status http://127.0.0.1:8090/
    check "... passing it what it does not serve" "Location: /new" sd_status http://127.0.0.1:8090/old
    check "systemctl reload applies the graft file" "reloaded: applied" \
        in_sd sh -c 'systemctl reload graft-edge && journalctl -u graft-edge --no-pager -n 5'
    # The graceful upgrade, with requests coming meanwhile (150 on new
    # connections, one each 20 ms).
    pid=$(main_pid)
    in_sd sh -c 'setsid sh -c "for i in \$(seq 150); do curl -s -o /dev/null -w \"%{http_code}\n\" --max-time 5 http://127.0.0.1:8090/; sleep 0.02; done >/tmp/codes; echo end >>/tmp/codes" >/dev/null 2>&1 </dev/null &'
    sleep 0.5
    check "graft-edge's upgrade (SIGUSR2) hands its listeners to a new process under systemd" \
        "graft-edge: upgraded: pid $pid handed its listeners" in_sd /usr/share/graft-edge/upgrade
    check "... which systemd takes as the unit's main process" "active new" in_sd sh -c \
        "echo \$(systemctl is-active graft-edge) \$([ \"\$(systemctl show -p MainPID --value graft-edge)\" != $pid ] && echo new)"
    for _ in $(seq 100); do in_sd grep -q end /tmp/codes 2>/dev/null && break; sleep 0.2; done
    check "... no request refused or failed meanwhile" "150 of 150" in_sd sh -c \
        'echo $(grep -c "^200$" /tmp/codes) of $(grep -c "^[0-9]" /tmp/codes)'
    check "... and the old process exits once its requests are done" "gone" in_sd sh -c \
        "for i in \$(seq 200); do [ -e /proc/$pid ] || { echo gone; exit; }; sleep 0.1; done; echo still there"
    check "an upgrade of the package upgrades a running graft-edge the same way" "graft-edge: upgraded: pid" \
        in_sd sh -c '/var/lib/dpkg/info/graft-edge.postinst configure 0.0.1 2>&1; systemctl is-active graft-edge'
    in_sd cp /etc/nginx/graft.json /tmp/graft.json.good
    in_sd sed -i 's/"op": "prefix"/"op": "prefixx"/' /etc/nginx/graft.json
    check "... refuses a bad one, graft-edge serving on" "reload failed active" \
        in_sd sh -c 'systemctl reload graft-edge 2>/dev/null && echo reloaded || echo reload failed $(systemctl is-active graft-edge)'
    in_sd sh -c 'systemctl restart graft-edge 2>/dev/null; sleep 3' || true
    check "a restart on a bad file fails once, naming the field, and is not retried" \
        "NRestarts=0 ActiveState=failed starts refused: 1" in_sd sh -c 'echo $(systemctl show -p ActiveState -p NRestarts graft-edge) \
            starts refused: $(journalctl -u graft-edge --no-pager | grep -c "graft-edge: /etc/nginx/graft.json: zone .*rules\[0\]\.when")'
    in_sd cp /tmp/graft.json.good /etc/nginx/graft.json
    in_sd systemctl start graft-edge
    in_sd sh -c "kill -KILL $(main_pid)"
    for _ in $(seq 30); do [[ $(in_sd systemctl show -p NRestarts --value graft-edge) == 1 ]] && break; sleep 0.2; done
    for _ in $(seq 30); do sd_status http://127.0.0.1:8090/ >/dev/null 2>&1 && break; sleep 0.2; done
    check "a crash (SIGKILL) is restarted" "NRestarts=1 active" \
        in_sd sh -c 'echo $(systemctl show -p NRestarts graft-edge) $(systemctl is-active graft-edge)'
    # (graft-edge's writer opens the file again within 250 ms of the signal.)
    in_sd logrotate -f /etc/logrotate.d/graft-edge
    sleep 0.5
    sd_status http://127.0.0.1:8090/after-rotation >/dev/null
    sleep 0.5
    check "logrotate's postrotate makes graft-edge reopen its access log" "GET /after-rotation" \
        in_sd cat /var/log/graft-edge/access.log
    check "systemctl stop stops it, with success" "Result=success ActiveState=inactive" \
        in_sd sh -c 'systemctl stop graft-edge; echo $(systemctl show -p Result -p ActiveState graft-edge)'
else
    skipped=1
    echo "skip graft-edge.service under systemd: systemd does not boot as a container's init here: ${booted:0:200}"
fi
docker rm -f "$name-systemd" >/dev/null 2>&1 || true

echo "package test: $((checks - failures)) passed, $failures failed$([ "$skipped" = 0 ] || echo ", graft-edge under systemd skipped")"
[ "$failures" = 0 ] && [ "$checks" -gt 0 ]
