# The package test's fleet and graft-edge: graft's image with Debian's etcd
# added, so that graft-agent (from its package) runs against a real etcd in
# a container with no network (and systemd, whose analyzer checks the
# units), and the graft-edge package installed with apt as a user would,
# with logrotate for its snippet. Not an image to ship.
#
# The build context is target/docker (make package-test): graft-edge.deb.
ARG IMAGE
FROM ${IMAGE}
COPY graft-edge.deb /tmp/
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server etcd-client systemd \
        logrotate /tmp/graft-edge.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/graft-edge.deb
