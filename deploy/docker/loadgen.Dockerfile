# syntax=docker/dockerfile:1
# loadgen image (load generator for gpu-workload). Build from the repository root:
#   docker build -f deploy/docker/loadgen.Dockerfile -t <registry>/loadgen:<tag> .
# Not built by this project's CI (no Docker engine there); see docs/deploy.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpu-workload --bin loadgen \
    && cp target/release/loadgen /loadgen

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /loadgen /usr/local/bin/loadgen
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/loadgen"]
