#!/bin/bash
# Configures an nginx source tree for building graft's module against it:
# nginx-sys needs the tree's headers and what `configure` writes
# (ngx_auto_config.h, the Makefile's include paths); nothing is compiled.
#
#   nginx/configure.sh SOURCE BUILD-DIR [COPY-DIR]     (make build NGINX_SRC=...)
#
# The configure arguments, first found of:
#   NGINX_CONF_FLAGS     the arguments of the nginx graft will be loaded into
#                        (`nginx -V` prints them as "configure arguments:");
#                        other modules (--add-module, --add-dynamic-module,
#                        --with-*=dynamic) are left out: graft needs none of
#                        their files, and they do not change the signature
#   SOURCE/conf_flags    Debian's nginx-dev (/usr/share/nginx/src): the exact
#                        arguments Debian's nginx was built with
#   the plain defaults   --with-compat and what lua-nginx-module uses (TLS
#                        for its cosockets and ngx.ssl, PCRE JIT for ngx.re,
#                        threads): see PLAIN_FLAGS below
# The module loads only into an nginx of the same version whose signature
# matches. With --with-compat on both sides the signature depends only on
# the platform and on PCRE (--with-compat pads the structures and sets the
# module-dependent bits itself: gzip, realip, dav, cache, ... in or out);
# without it, on every module choice. nginx names a mismatch: "module ...
# version 1022001 instead of 1026003", "module ... is not binary
# compatible".
#
# With COPY-DIR, SOURCE is copied there first and configured from the copy:
# an upstream tree's configure writes a Makefile into the tree itself, which
# would replace the one its owner builds nginx with (OpenResty's bundle).
set -euo pipefail
src=$1
build=$2
copy=${3:-}
PLAIN_FLAGS=(--with-compat --with-threads --with-pcre-jit --with-http_ssl_module
    --with-http_v2_module --with-http_realip_module --with-http_stub_status_module)

if [ -f "$src/configure" ]; then
    configure=./configure
elif [ -f "$src/auto/configure" ]; then
    configure=auto/configure    # a checkout of nginx's repository
else
    echo "nginx/configure.sh: $src is not an nginx source tree (no configure, no auto/configure)" >&2
    exit 1
fi
[ -f "$src/src/core/nginx.h" ] || { echo "nginx/configure.sh: $src has no src/core/nginx.h" >&2; exit 1; }

if [ -n "${NGINX_CONF_FLAGS:-}" ]; then
    eval "given=($NGINX_CONF_FLAGS)"
    flags=()
    for f in "${given[@]}"; do
        case $f in
            --add-module=* | --add-dynamic-module=* | --with-*=dynamic) echo "(leaving out $f)" ;;
            --builddir=*) ;;
            *) flags+=("$f") ;;
        esac
    done
    from="NGINX_CONF_FLAGS"
elif [ -f "$src/conf_flags" ]; then
    # shellcheck disable=SC1091
    source "$src/conf_flags"
    flags=("${NGX_CONF_FLAGS[@]}")
    from="$src/conf_flags"
else
    flags=("${PLAIN_FLAGS[@]}")
    from="graft's plain defaults"
fi
case " ${flags[*]} " in
    *" --with-compat "*) ;;
    *) echo "nginx/configure.sh: warning: no --with-compat: the module will load only into an nginx built from this very tree with these flags" >&2 ;;
esac

if [ -n "$copy" ]; then
    rm -rf "$copy"
    mkdir -p "$copy"
    for d in configure auto src conf_flags; do
        [ -e "$src/$d" ] && cp -R "$src/$d" "$copy/"
    done
    src=$copy
fi
mkdir -p "$build"
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
echo "configuring nginx $version from $src ($from) into $build"
cd "$src"
"$configure" "${flags[@]}" --builddir="$build" >"$build.log" 2>&1 || {
    tail -n 20 "$build.log" >&2
    exit 1
}
