# syntax=docker/dockerfile:1
# keda-gpu-scaler image. Build from the repository root:
#   docker build -f deploy/docker/scaler.Dockerfile -t <registry>/keda-gpu-scaler:<tag> .
# Not built by this project's CI (no Docker engine there); see docs/deploy.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keda-gpu-scaler --bin keda-gpu-scaler \
    && cp target/release/keda-gpu-scaler /keda-gpu-scaler

# distroless cc: glibc, libgcc and CA certificates (https Prometheus), no shell, no package
# manager. For source: nvml the NVIDIA container toolkit mounts libnvidia-ml at run time.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /keda-gpu-scaler /usr/local/bin/keda-gpu-scaler
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
EXPOSE 6000 8080
ENTRYPOINT ["/usr/local/bin/keda-gpu-scaler"]
CMD ["serve"]
