# syntax=docker/dockerfile:1
# logto-gate container image: a static-enough Rust binary on distroless (glibc, CA-free: TLS roots are built in),
# running as a non-root user. Build: docker build -t logto-gate .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not re-download them; the registry and target dir are cache mounts.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry cargo fetch --locked
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin logto-gate \
    && install -D -m 0755 target/release/logto-gate /out/logto-gate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/logto-gate /usr/local/bin/logto-gate
COPY config/logto-gate.toml /etc/logto-gate/logto-gate.toml
ENV LOGTO_GATE_CONFIG=/etc/logto-gate/logto-gate.toml
EXPOSE 4180
# distroless "nonroot" is uid/gid 65532; numeric so the kubelet can verify runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/logto-gate"]
