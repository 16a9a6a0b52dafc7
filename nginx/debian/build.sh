#!/bin/sh
# Builds libnginx-mod-http-graft_<version>_<arch>.deb the way Debian packages
# its nginx modules (libnginx-mod-*): the module in /usr/lib/nginx/modules,
# its load_module line in /usr/share/nginx/modules-available, linked from
# /etc/nginx/modules-enabled by the maintainer scripts (after the Lua
# module's 50-), graft's Lua side in LuaJIT's default path, the dashboard
# page and the example in /usr/share/graft, the docs in /usr/share/doc.
# It depends on the nginx ABI the module was built against.
#
#   nginx/debian/build.sh MODULE.so OUTDIR      (make deb)
set -eu
module=$(realpath "$1")
mkdir -p "$2"
out=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pkg=libnginx-mod-http-graft

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || { echo "no workspace version in Cargo.toml" >&2; exit 1; }
debversion=$version-1
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
# and the test module's Lua files stay out.
install -m 644 "$root/lua/graft.lua" "$stage/usr/share/lua/5.1/"
for f in "$root"/lua/graft/*.lua; do
    [ "$(basename "$f")" = bench.lua ] || install -m 644 "$f" "$stage/usr/share/lua/5.1/graft/"
done
for f in "$root"/lua/graft/legacy/*.lua; do
    [ "$(basename "$f")" = probe.lua ] || install -m 644 "$f" "$stage/usr/share/lua/5.1/graft/legacy/"
done

install -m 644 "$root/nginx/status.html" "$stage/usr/share/graft/"
install -m 644 "$root/nginx/example/graft.json" "$root/nginx/example/graft-site.conf" "$stage/usr/share/graft/examples/"
install -m 644 "$here/copyright" "$stage/usr/share/doc/$pkg/"
install -m 644 "$root/README.md" "$root/docs/PORTING.md" "$root/docs/DEVELOPER.md" "$stage/usr/share/doc/$pkg/"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
date=$(git -C "$root" log -1 --format=%aD 2>/dev/null || date -R)
printf '%s (%s) unstable; urgency=medium\n\n  * graft %s, built from commit %s.\n\n -- graft developers <graft@localhost>  %s\n' \
    "$pkg" "$debversion" "$version" "$commit" "$date" | gzip -9n >"$stage/usr/share/doc/$pkg/changelog.Debian.gz"

# Shared-library dependencies, as dpkg-shlibdeps computes them.
shlibs_dir=$(mktemp -d)
trap 'rm -rf "$shlibs_dir"' EXIT
mkdir -p "$shlibs_dir/debian"
printf 'Source: graft\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$shlibs_dir/debian/control"
shlibs=$(cd "$shlibs_dir" && dpkg-shlibdeps -O "$stage/usr/lib/nginx/modules/ngx_http_graft_module.so" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@NGINX_ABI@/$abi/" \
    -e "s/@SHLIBS@/$shlibs/" -e "s/@SIZE@/$size/" "$here/control.in" >"$stage/DEBIAN/control"
install -m 755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"
(cd "$stage" && find usr -type f -exec md5sum {} + | sort -k2) >"$stage/DEBIAN/md5sums"

deb=$out/${pkg}_${debversion}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
