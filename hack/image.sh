#!/usr/bin/env bash
# Builds and checks the MagTape image with buildah, without a container daemon.
#
#   hack/image.sh build   build the Dockerfile into $IMAGE (default localhost/magtape:<version>)
#   hack/image.sh test    build if needed, then run the smoke test inside the image
#                         (`magtape check` on a sample, `magtape serve` until /readyz)
#
# Base image: $PYTHON_IMAGE (default python:3.12-slim-bookworm) when it can be
# pulled; otherwise a Debian bookworm base with python3 and python3-venv made
# from Debian packages with mmdebstrap (localhost/magtape-base:bookworm, built
# once and reused). Everything runs with --isolation=chroot, which works where
# containers cannot be run (CI, unprivileged build hosts).
# Installs buildah and mmdebstrap (Debian packages) when they are missing.
# Prints the image size and the build time.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE=${IMAGE:-localhost/magtape:$VERSION}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.12-slim-bookworm}
LOCAL_BASE=localhost/magtape-base:bookworm
BUILD_LOG=${BUILD_LOG:-build/image-build.log}
mkdir -p "$(dirname "$BUILD_LOG")"
export BUILDAH_ISOLATION=chroot

need_tools() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  if ((${#missing[@]})); then
    echo "image: installing ${missing[*]} (Debian packages)"
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# The base: the registry's when reachable, else one made here from Debian packages.
base_image() {
  if buildah pull --quiet "$PYTHON_IMAGE" >/dev/null 2>&1; then
    echo "$PYTHON_IMAGE"; return
  fi
  if ! buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
    echo "image: $PYTHON_IMAGE cannot be pulled; making $LOCAL_BASE with mmdebstrap" >&2
    local tmp ctr
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$tmp/rootfs.tar" >&2
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >&2
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/sh "$ctr"
    buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

build() {
  need_tools
  local started base size
  started=$(date +%s)
  base=$(base_image)
  echo "image: building $IMAGE on $base"
  # Behind a TLS-inspecting proxy pip needs the host's CA bundle: mounted for
  # the build's RUN steps only (BUILD_CA_BUNDLE= to skip).
  local ca=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt} ca_args=()
  [[ -n $ca && -f $ca ]] && ca_args=(--volume "$ca:/run/build-ca.crt:ro"
                                     --build-arg PIP_CERT=/run/build-ca.crt)
  # NO_CACHE=1: rebuild every step (what a clean machine does; for timing).
  local cache=(--layers); [[ -n ${NO_CACHE:-} ]] && cache=(--no-cache)
  buildah build --isolation=chroot --force-rm "${cache[@]}" --build-arg "PYTHON_IMAGE=$base" \
    "${ca_args[@]}" -f Dockerfile -t "$IMAGE" . >"$BUILD_LOG" 2>&1 || {
    tail -40 "$BUILD_LOG" >&2; echo "image: build failed (full log: $BUILD_LOG)" >&2; exit 1; }
  size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
  echo "image: built $IMAGE in $(( $(date +%s) - started )) s (base included); size $size"
}

smoke() {
  local ctr
  buildah inspect --type image "$IMAGE" >/dev/null 2>&1 || build
  ctr=$(buildah from --quiet --pull-never "$IMAGE")
  trap 'buildah rm "$ctr" >/dev/null' RETURN
  echo "image: running the smoke test inside $IMAGE"
  buildah run --isolation=chroot --user 10001:10001 "$ctr" -- \
    /opt/magtape/bin/python /usr/local/lib/magtape/smoke.py
  buildah run --isolation=chroot --user 10001:10001 "$ctr" -- magtape --version
}

case "${1:-}" in
  build) build ;;
  test) build; smoke ;;
  *) echo "usage: hack/image.sh build|test" >&2; exit 2 ;;
esac
