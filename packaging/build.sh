#!/usr/bin/env bash
# Builds the twoway .deb and .rpm into dist/:
#
#   packaging/build.sh                 # both, for the host architecture
#   ARCH=arm64 packaging/build.sh deb  # one format, another architecture
#
# VERSION defaults to the nearest v* tag (without the v), else
# 0.0.0~git.<commit>; COMMIT to the current commit. The binary is static
# (CGO_ENABLED=0) with both stamped in (twoway version). nfpm runs from the
# Go module cache at a pinned version (the first run downloads and builds it).
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=v2.43.0
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)

ARCH=${ARCH:-$(go env GOARCH)}
if [ -z "${COMMIT:-}" ]; then
  COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT-dirty"
  fi
fi
if [ -z "${VERSION:-}" ]; then
  if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
    VERSION=${tag#v}
  else
    VERSION="0.0.0~git.${COMMIT:0:7}"
  fi
fi
MAINTAINER=${MAINTAINER:-"twoway maintainers <twoway@localhost>"}

out=dist
bin="$out/linux_${ARCH}/twoway"
mkdir -p "$(dirname "$bin")"

# The units, plists and examples the packages ship must match the code.
go run ./packaging/gen -check

echo "building $bin (version $VERSION, commit $COMMIT)"
pkg=github.com/twoway/twoway/internal/buildinfo
CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" go build -trimpath \
  -ldflags "-s -w -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT" \
  -o "$bin" ./cmd/twoway

export VERSION ARCH MAINTAINER BINARY="$bin"
for f in "${formats[@]}"; do
  case "$f" in
    deb|rpm) ;;
    *) echo "build.sh: unknown format $f (want deb or rpm)" >&2; exit 2 ;;
  esac
  go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" package \
    --config packaging/nfpm.yaml --packager "$f" --target "$out/"
done
ls -l "$out"/*.deb "$out"/*.rpm 2>/dev/null || true
