# The package test's fleet: graft's image with Debian's etcd added, so that
# graft-agent (from its package) runs against a real etcd in a container
# with no network (and systemd, whose analyzer checks the agent's unit).
# Not an image to ship.
ARG IMAGE
FROM ${IMAGE}
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server etcd-client systemd \
 && rm -rf /var/lib/apt/lists/*
