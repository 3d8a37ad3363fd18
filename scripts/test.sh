#!/usr/bin/env bash
# The whole test suite: every workspace crate (unit, integration over real gRPC/HTTP on loopback,
# the binary as users run it), then the deployment checks (helm, KEDA CRD schemas, typed
# Kubernetes objects). The tools those need (scripts/tools.sh) are installed when missing only if
# CI is set; otherwise the script stops before any test, naming each missing tool and how to
# install it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tools.sh
source scripts/tools.sh

# Checked here too, so a missing helm stops the run now rather than after the Rust tests.
need_test_tools
need_deploy_tools
stop_if_missing test

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The chaos benchmark in its short form: hostile tenants against the binary, promises checked.
CHAOS_SHORT=1 bash scripts/chaos.sh
bash scripts/test-deploy.sh
