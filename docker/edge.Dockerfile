# graft-edge from its package, for docker/compose.yaml: in front of the
# graft image's nginx, in that container's network namespace (FL1 and the
# origin at 127.0.0.1:8080, as the package's settings say), listening on
# port 8090 of every address of it, its admin listener on its loopback
# (8091). It runs as the graft-edge user, as the package's unit does.
#
#   make docker         builds the packages, then this image (graft-edge:<version>)
#
# The build context is target/docker: graft-edge.deb.
ARG BASE=debian:12
FROM ${BASE}

# Nothing starts while packages install: there is no init system here.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d

COPY graft-edge.deb /tmp/
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/graft-edge.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/graft-edge.deb \
 && sed -i 's/"127\.0\.0\.1:8090"/"0.0.0.0:8090"/' /etc/graft/edge.json \
 && rm /etc/graft/edge.key /etc/graft/edge-admin.token

# The key and the token are made when a container starts, never baked into
# the image (every container of it would share them); or the key is the
# one nginx holds, from the file GRAFT_EDGE_KEY_FROM names (a volume the
# two containers share: docker/compose.yaml), waited for up to 10 s. Then
# graft-edge runs as its own user with no capability, as
# graft-edge.service runs it (/run/graft-edge is what the unit's
# RuntimeDirectory= makes).
RUN printf '%s\n' '#!/bin/sh' \
        'set -e' \
        'if [ -n "${GRAFT_EDGE_KEY_FROM:-}" ]; then' \
        '    for _ in $(seq 50); do [ -s "$GRAFT_EDGE_KEY_FROM" ] && break; sleep 0.2; done' \
        '    install -m 0640 -o root -g graft-edge "$GRAFT_EDGE_KEY_FROM" /etc/graft/edge.key' \
        'fi' \
        'for secret in edge.key edge-admin.token; do' \
        '    if ! [ -s /etc/graft/$secret ]; then' \
        '        (umask 077 && head -c 32 /dev/urandom | base64 >/etc/graft/$secret)' \
        '    fi' \
        '    chgrp graft-edge /etc/graft/$secret && chmod 0640 /etc/graft/$secret' \
        'done' \
        'install -d -o graft-edge -g graft-edge -m 750 /run/graft-edge' \
        'exec setpriv --reuid=graft-edge --regid=graft-edge --init-groups --no-new-privs \' \
        '    --inh-caps=-all --bounding-set=-all "$@"' >/usr/local/bin/graft-edge-entrypoint \
 && chmod 755 /usr/local/bin/graft-edge-entrypoint
ENTRYPOINT ["/usr/local/bin/graft-edge-entrypoint"]

EXPOSE 8090
# SIGTERM: graceful, within the settings' timeouts.shutdown_ms (5 s).
STOPSIGNAL SIGTERM
CMD ["/usr/sbin/graft-edge", "/etc/graft/edge.json"]
