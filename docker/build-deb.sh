#!/bin/bash
# Builds graft's packages inside a graft-build:debianNN container (the
# release's own nginx-dev and Rust), offline, from the vendored crates:
# the source replacement is in this build's cargo configuration only.
#
#   docker run --network none -v REPO:/src:ro -v VENDOR:/vendor:ro
#       -v TARGET:/target -v OUT:/out graft-build:debian13 /src/docker/build-deb.sh
#   (make deb DEBIAN=13)
set -euo pipefail
export CARGO_HOME=/target/cargo-home HOME=/target
mkdir -p /target/nginx "$CARGO_HOME"
cat >"$CARGO_HOME/config.toml" <<'CONFIG'
[source.crates-io]
replace-with = "vendored"

[source.vendored]
directory = "/vendor"

[net]
offline = true
CONFIG
# Debian's configure with Debian's flags, into the build's own directory.
if ! [ -f /target/nginx/ngx_auto_config.h ]; then
    (cd /usr/share/nginx/src && source ./conf_flags &&
        ./configure "${NGX_CONF_FLAGS[@]}" --builddir=/target/nginx >/target/nginx.log 2>&1) || {
        tail -n 20 /target/nginx.log >&2
        exit 1
    }
fi
. /etc/os-release
echo "building for Debian $VERSION_ID: $(rustc --version), nginx $(dpkg-query -W -f='${Version}' nginx)"
cd /src
NGINX_SOURCE_DIR=/usr/share/nginx/src NGINX_BUILD_DIR=/target/nginx \
    cargo build --locked --release -p graft-nginx -p graft-agent -p graft-edge --target-dir /target
nginx/debian/build.sh /target/release/libngx_http_graft_module.so /target/release/graft-agent \
    /target/release/graft-edge /out
