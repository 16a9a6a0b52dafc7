#!/bin/sh
# Makes the `debian:12` base image from Debian's archive, for machines that
# cannot pull it from a registry: debootstrap a minimal bookworm and import
# it. The image has the same apt sources as Debian's own (bookworm,
# bookworm-updates, bookworm-security), so the Dockerfile is the same
# either way.
#
#   docker/make-base.sh [TAG]        TAG defaults to debian:12
#   MIRROR=http://... docker/make-base.sh
set -eu
tag=${1:-debian:12}
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
        sed -n -e 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p' -e 's#^deb \(http[^ ]*/debian\)/* bookworm .*#\1#p' |
        head -n1)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
rootfs=$(mktemp -d /tmp/graft-debian12.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $MIRROR (about a minute)"
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    exit 1
}
rm -f "$rootfs.log"
security=$(echo "$MIRROR" | sed 's#/debian$#/debian-security#')
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As Debian's image: no package caches, no services started by apt.
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "made $tag"
