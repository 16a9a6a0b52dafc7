#!/bin/sh
# Makes a `debian:12` or `debian:13` base image from Debian's archive, for
# machines that cannot pull it from a registry: debootstrap a minimal
# bookworm or trixie and import it. The image has the same apt sources as
# Debian's own (<suite>, <suite>-updates, <suite>-security), so the
# Dockerfiles are the same either way.
#
#   docker/make-base.sh [TAG]        TAG: debian:12 (the default) or debian:13
#   MIRROR=http://... docker/make-base.sh debian:13
set -eu
tag=${1:-debian:12}
case $tag in
    debian:12) suite=bookworm ;;
    debian:13) suite=trixie ;;
    *) echo "docker/make-base.sh: $tag: debian:12 or debian:13" >&2; exit 2 ;;
esac
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag is there"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "docker/make-base.sh: needs debootstrap (apt-get install debootstrap)" >&2
    exit 1
}
# The machine's own Debian mirror, when it has one.
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p' -e 's#^deb \(http[^ ]*/debian\)/* [a-z]* .*#\1#p' |
        head -n1)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
rootfs=$(mktemp -d /tmp/graft-$suite.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $MIRROR (about a minute)"
debootstrap --variant=minbase "$suite" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    exit 1
}
rm -f "$rootfs.log"
security=$(echo "$MIRROR" | sed 's#/debian$#/debian-security#')
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As Debian's image: no package caches, no services started by apt.
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "made $tag"
