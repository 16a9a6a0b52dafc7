#!/bin/sh
# Builds libnginx-mod-http-graft_<version>_<arch>.deb the way Debian packages
# its nginx modules (libnginx-mod-*): the module in /usr/lib/nginx/modules,
# its load_module line in /usr/share/nginx/modules-available, linked from
# /etc/nginx/modules-enabled by the maintainer scripts (after the Lua
# module's 50-), graft's Lua side in LuaJIT's default path, the dashboard
# page and the example in /usr/share/graft, the docs in /usr/share/doc.
# It depends on the nginx ABI the module was built against.
#
# Beside it, graft-agent_<version>_<arch>.deb: the fleet agent in /usr/bin,
# its systemd unit (not enabled: /etc/default/graft-agent first) and its
# settings in /etc/default; and graft-edge_<version>_<arch>.deb: the
# all-Rust server in /usr/sbin, its systemd unit (not enabled), its
# settings in /etc/graft (loopback only), its logrotate snippet and its
# reload and upgrade helpers (edge/).
#
#   nginx/debian/build.sh MODULE.so AGENT EDGE OUTDIR      (make deb)
#
# GRAFT_DEB_SUFFIX is added to the Debian revision (+deb13 for Debian 13's
# packages, none for Debian 12's); GRAFT_COMMIT and GRAFT_DATE name the
# commit where git cannot (a build in a container).
set -eu
module=$(realpath "$1")
agent=$(realpath "$2")
edge=$(realpath "$3")
mkdir -p "$4"
out=$(cd "$4" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pkg=libnginx-mod-http-graft

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || { echo "no workspace version in Cargo.toml" >&2; exit 1; }
debversion=$version-1${GRAFT_DEB_SUFFIX:-}
arch=$(dpkg --print-architecture)
# The ABI of the nginx whose headers the module was built with: Debian's
# nginx provides exactly one nginx-abi-<version>-<n>.
abi=$(dpkg-query -W -f='${Provides}' nginx | tr ',' '\n' | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p' | head -n1)
[ -n "$abi" ] || { echo "the installed nginx provides no nginx-abi-*: install Debian's nginx" >&2; exit 1; }

stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/lib/nginx/modules" "$stage/usr/share/nginx/modules-available" \
    "$stage/usr/share/lua/5.1/graft/legacy" "$stage/usr/share/graft/examples" "$stage/usr/share/doc/$pkg"

# The module, without its debug information (as dh_strip does).
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$stage/usr/lib/nginx/modules/ngx_http_graft_module.so" "$module"
chmod 644 "$stage/usr/lib/nginx/modules/ngx_http_graft_module.so"
install -m 644 "$here/mod-http-graft.conf" "$stage/usr/share/nginx/modules-available/"

# The Lua side, where Debian's LuaJIT finds it without lua_package_path
# (/usr/share/lua/5.1 is where lua-resty-core lives too). The benchmark's
# and the test module's Lua files live under lua/testing/, never installed.
install -m 644 "$root/lua/graft.lua" "$stage/usr/share/lua/5.1/"
install -m 644 "$root"/lua/graft/*.lua "$stage/usr/share/lua/5.1/graft/"
install -m 644 "$root"/lua/graft/legacy/*.lua "$stage/usr/share/lua/5.1/graft/legacy/"

install -m 644 "$root/nginx/status.html" "$stage/usr/share/graft/"
install -m 644 "$root/nginx/example/graft.json" "$root/nginx/example/graft-site.conf" "$stage/usr/share/graft/examples/"
install -m 644 "$root/README.md" "$root/docs/PORTING.md" "$root/docs/DEVELOPER.md" "$stage/usr/share/doc/$pkg/"
commit=${GRAFT_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
date=${GRAFT_DATE:-$(git -C "$root" log -1 --format=%aD 2>/dev/null || date -R)}
shlibs_dir=$(mktemp -d)
trap 'rm -rf "$shlibs_dir"' EXIT

# finish PACKAGE STAGE CONTROL-TEMPLATE BINARY [MAINTAINER-SCRIPTS...]: the
# changelog, the control file (libc dependencies as dpkg-shlibdeps computes
# them for BINARY), the maintainer scripts, md5sums, and the .deb.
finish() {
    fpkg=$1 fstage=$2 template=$3 binary=$4
    shift 4
    mkdir -p "$fstage/DEBIAN" "$fstage/usr/share/doc/$fpkg"
    printf '%s (%s) unstable; urgency=medium\n\n  * graft %s, built from commit %s.\n\n -- graft developers <graft@localhost>  %s\n' \
        "$fpkg" "$debversion" "$version" "$commit" "$date" | gzip -9n >"$fstage/usr/share/doc/$fpkg/changelog.Debian.gz"
    install -m 644 "$here/copyright" "$fstage/usr/share/doc/$fpkg/"
    rm -rf "$shlibs_dir/debian"
    mkdir -p "$shlibs_dir/debian"
    printf 'Source: graft\n\nPackage: %s\nArchitecture: any\n' "$fpkg" >"$shlibs_dir/debian/control"
    shlibs=$(cd "$shlibs_dir" && dpkg-shlibdeps -O "$fstage/$binary" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')
    [ -n "$shlibs" ] || { echo "dpkg-shlibdeps found no dependencies of $binary" >&2; exit 1; }
    size=$(du -sk --exclude=DEBIAN "$fstage" | cut -f1)
    sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@NGINX_ABI@/$abi/" \
        -e "s/@SHLIBS@/$shlibs/" -e "s/@SIZE@/$size/" "$template" >"$fstage/DEBIAN/control"
    for script in "$@"; do
        install -m 755 "$script" "$fstage/DEBIAN/"
    done
    # Every file but the conffiles (under /etc), as dh_md5sums lists them.
    (cd "$fstage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
        sed 's#^\./##' | sort | xargs md5sum) >"$fstage/DEBIAN/md5sums"
    if [ -d "$fstage/etc" ]; then
        (cd "$fstage" && find etc -type f | sed 's#^#/#' | sort) >"$fstage/DEBIAN/conffiles"
    fi
    deb=$out/${fpkg}_${debversion}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$fstage" "$deb" >/dev/null
    rm -rf "$fstage"
    echo "$deb"
}

finish "$pkg" "$stage" "$here/control.in" usr/lib/nginx/modules/ngx_http_graft_module.so \
    "$here/postinst" "$here/prerm" "$here/postrm"

# The fleet agent.
astage=$out/stage-agent
rm -rf "$astage"
mkdir -p "$astage/usr/bin" "$astage/lib/systemd/system" "$astage/etc/default" \
    "$astage/usr/share/doc/graft-agent"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$astage/usr/bin/graft-agent" "$agent"
chmod 755 "$astage/usr/bin/graft-agent"
install -m 644 "$here/agent/graft-agent.service" "$astage/lib/systemd/system/"
install -m 644 "$here/agent/graft-agent.default" "$astage/etc/default/graft-agent"
finish graft-agent "$astage" "$here/agent/control.in" usr/bin/graft-agent \
    "$here/agent/postinst" "$here/agent/postrm"

# graft-edge.
estage=$out/stage-edge
rm -rf "$estage"
mkdir -p "$estage/usr/sbin" "$estage/lib/systemd/system" "$estage/etc/graft" \
    "$estage/etc/logrotate.d" "$estage/usr/share/graft-edge" "$estage/usr/share/doc/graft-edge"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$estage/usr/sbin/graft-edge" "$edge"
chmod 755 "$estage/usr/sbin/graft-edge"
install -m 644 "$here/edge/graft-edge.service" "$estage/lib/systemd/system/"
install -m 644 "$here/edge/edge.json" "$estage/etc/graft/edge.json"
install -m 644 "$here/edge/graft-edge.logrotate" "$estage/etc/logrotate.d/graft-edge"
install -m 755 "$here/edge/reload" "$estage/usr/share/graft-edge/reload"
install -m 755 "$here/edge/upgrade" "$estage/usr/share/graft-edge/upgrade"
install -m 644 "$root/README.md" "$estage/usr/share/doc/graft-edge/"
finish graft-edge "$estage" "$here/edge/control.in" usr/sbin/graft-edge \
    "$here/edge/postinst" "$here/edge/prerm" "$here/edge/postrm"
