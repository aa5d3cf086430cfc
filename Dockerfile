# Weft's image: the `weft` binary (proxy, config server, `weft init`) on Debian, with
# iptables for `weft init`. Build it from the repository's root:
#
#   docker build -t weft:0.1.0 .
#
# docs/kubernetes.md says how the Kubernetes examples use it.

# Build: the filters built into Weft are Wasm components that build scripts compile
# for wasm32-wasip2 (and wasip1), so those targets come first. The cache mounts keep
# crates and compiled dependencies between builds (BuildKit).
FROM rust:1.95-slim-trixie AS build
RUN rustup target add wasm32-wasip2 wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weft-cli \
    && cp target/release/weft /usr/local/bin/weft

# Run: the binary, iptables for the init container, and a user that is not root.
# The sidecar runs as uid 1337, the uid `weft init --proxy-uid` leaves uncaptured.
FROM debian:stable-slim
# Versions are not pinned: stable's packages get security fixes, and a pinned one
# would stop building when the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1337 weft \
    && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin weft
COPY --from=build /usr/local/bin/weft /usr/local/bin/weft
USER 1337:1337
ENTRYPOINT ["weft"]
CMD ["--help"]
