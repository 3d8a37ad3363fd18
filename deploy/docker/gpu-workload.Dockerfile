# syntax=docker/dockerfile:1
# gpu-workload image (CUDA). Build from the repository root:
#   docker build -f deploy/docker/gpu-workload.Dockerfile -t <registry>/gpu-workload:<tag> .
# Not built by this project's CI (no Docker engine there); see docs/deploy.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# cudarc loads libcuda/libcublas at run time, so the build needs no CUDA toolkit.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpu-workload --bin gpu-workload \
    && cp target/release/gpu-workload /gpu-workload

# CUDA 12.6 runtime (matches cudarc's cuda-12060 feature) with cuBLAS; Ubuntu 24.04's glibc is
# newer than the build stage's, so the binary links. The driver (libcuda) comes from the node
# through the NVIDIA container toolkit. Without a GPU, --backend auto falls back to the CPU.
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
COPY --from=build /gpu-workload /usr/local/bin/gpu-workload
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/gpu-workload"]
CMD ["--addr", "0.0.0.0:8000", "--backend", "auto"]
