# What building graft's packages for a Debian release needs, on that
# release: its nginx and nginx-dev (the headers, configure and conf_flags,
# and the nginx-abi-* the package depends on), libclang for nginx-sys's
# bindings, protoc for graft-agent's etcd client, cmake for graft-edge's
# zlib-ng (under Pingora), dpkg-dev, and Debian's
# Rust: rustc-web/cargo-web (1.96, in bookworm-security and in trixie),
# since trixie's rustc 1.85 cannot build graft's dependencies (encoding_rs
# 0.8.44 and tonic 0.14.9 need 1.88). Crates come from a vendored copy
# (docker/build-deb.sh), so a build needs no network.
#
#   docker build --network host --build-arg BASE=debian:13 -t graft-build:debian13 -f docker/build.Dockerfile docker
ARG BASE=debian:13
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        rustc-web cargo-web libclang-dev nginx nginx-dev dpkg-dev binutils \
        protobuf-compiler libprotobuf-dev cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/*
