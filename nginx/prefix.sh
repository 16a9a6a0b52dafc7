#!/bin/sh
# Lays out an nginx prefix for graft: what the workers read (graft's Lua
# side, the dashboard page) is copied into PREFIX/graft, readable by all.
# nginx's workers run as another user than the one who cloned graft (as
# root, Debian's `nobody`/`www-data`), and a clone in a private directory
# (root's home, `mktemp -d`) is out of their reach; the prefix is not.
#
#   nginx/prefix.sh PREFIX     then @GRAFT_ROOT@ is PREFIX/graft
set -eu
prefix=$1
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$prefix/tmp" "$prefix/html" "$prefix/graft/nginx"
rm -rf "$prefix/graft/lua"
cp -R "$root/lua" "$prefix/graft/lua"
cp "$root/nginx/status.html" "$prefix/graft/nginx/status.html"
chmod -R a+rX "$prefix/graft" "$prefix/html"
# The admin API's credential (graft_admin_token), made once per prefix:
# readable by its owner only (nginx's master reads it as root).
if ! [ -s "$prefix/admin.token" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$prefix/admin.token")
fi
chmod a+rx "$prefix" "$prefix/tmp"
# Every directory above the prefix must let the workers through.
dir=$prefix
while [ "$dir" != / ] && [ "$dir" != . ]; do
    dir=$(dirname "$dir")
    if ! [ -x "$dir" ] || [ "$(stat -c %a "$dir" | cut -c3)" = 0 ] 2>/dev/null; then
        echo "nginx/prefix.sh: $dir is not searchable by nginx's workers: choose a prefix outside it" >&2
        exit 1
    fi
done
