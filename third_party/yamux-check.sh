#!/usr/bin/env bash
# third_party/yamux must be hashicorp/yamux v0.1.2 (from the Go module
# proxy, checked against go.sum's notary) plus third_party/yamux/twoway.patch
# and nothing else, so that a reviewer reads the patch, not the whole copy.
#
#   third_party/yamux-check.sh          # fails if the copy differs from v0.1.2 + the patch
#   third_party/yamux-check.sh --write  # rewrites the patch from the copy (after editing it)
set -euo pipefail
cd "$(dirname "$0")/.."
upstream=github.com/hashicorp/yamux@v0.1.2
dir=$(GOFLAGS=-mod=mod go mod download -json "$upstream" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "could not download $upstream" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$dir" "$tmp/a"
cp -r third_party/yamux "$tmp/b"
rm -f "$tmp/b/twoway.patch" "$tmp/b/TWOWAY.md"
chmod -R u+w,go-w "$tmp/a" "$tmp/b"
(cd "$tmp" && git -c core.quotepath=off diff --no-index --no-prefix --no-color --no-ext-diff a b >diff) || true
if [ "${1:-}" = --write ]; then
  cp "$tmp/diff" third_party/yamux/twoway.patch
  echo "wrote third_party/yamux/twoway.patch ($(grep -c '^diff --git' "$tmp/diff") files)"
  exit 0
fi
if ! cmp -s "$tmp/diff" third_party/yamux/twoway.patch; then
  echo "third_party/yamux is not $upstream plus third_party/yamux/twoway.patch:" >&2
  diff third_party/yamux/twoway.patch "$tmp/diff" | head -40 >&2
  exit 1
fi
echo "third_party/yamux is $upstream plus twoway.patch ($(grep -c '^diff --git' "$tmp/diff") files)"
