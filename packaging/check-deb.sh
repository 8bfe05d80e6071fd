#!/usr/bin/env bash
# Builds the .deb with packaging/build.sh, installs it on this machine,
# checks what landed, reinstalls it (the upgrade path), then purges it and
# checks it is gone. CI runs it; it needs root and dpkg and skips without.
# A twoway user it had to create is removed again at the end; one that
# existed before is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "skip: the package check needs root (it runs dpkg -i)"; exit 0
fi
if ! command -v dpkg >/dev/null; then
  echo "skip: no dpkg on this machine"; exit 0
fi
if dpkg-query -W -f '${Status}' twoway 2>/dev/null | grep -q installed; then
  echo "skip: a twoway package is already installed here; not replacing it"; exit 0
fi

fail() { echo "package check: $*" >&2; exit 1; }

user_existed=
getent passwd twoway >/dev/null && user_existed=1

packaging/build.sh deb
deb=$(ls -t dist/twoway_*_"$(dpkg --print-architecture)".deb | head -n1)
commit=$(git rev-parse --short=12 HEAD)

cleanup() {
  dpkg --purge twoway >/dev/null 2>&1 || true
  if [ -z "$user_existed" ] && getent passwd twoway >/dev/null; then
    userdel twoway 2>/dev/null || true
    groupdel twoway 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "== dpkg -i $deb"
dpkg -i "$deb"

for f in /usr/bin/twoway \
  /usr/lib/systemd/system/twoway-server.service /usr/lib/systemd/system/twoway-client.service \
  /etc/twoway/server.toml.example /etc/twoway/client.toml.example; do
  [ -e "$f" ] || fail "$f is missing"
done
for role in server client; do
  cmp -s "/usr/lib/systemd/system/twoway-$role.service" "packaging/systemd/twoway-$role.service" ||
    fail "installed twoway-$role.service differs from packaging/systemd"
done
dpkg-query -W -f '${Conffiles}\n' twoway | grep -q /etc/twoway/server.toml.example ||
  fail "the examples are not conffiles"
v=$(/usr/bin/twoway version)
echo "$v"
case "$v" in *"$commit"*) ;; *) fail "twoway version does not name commit $commit" ;; esac
getent passwd twoway >/dev/null || fail "no twoway user"
[ "$(stat -c %U /var/lib/twoway)" = twoway ] || fail "/var/lib/twoway is not owned by twoway"
[ "$(stat -c %G:%a /etc/twoway)" = twoway:750 ] || fail "/etc/twoway is not root:twoway 0750"
if [ -d /run/systemd/system ]; then
  # systemd runs here: the packaged unit is known, installed, not running.
  set +e; st=$(/usr/bin/twoway service status --role server); rc=$?; set -e
  [ "$st" = "twoway-server: stopped" ] && [ $rc = 3 ] || fail "service status: '$st' (exit $rc)"
fi

echo "== dpkg -i again (upgrade path: postinst must be idempotent)"
dpkg -i "$deb"
getent passwd twoway >/dev/null || fail "twoway user gone after reinstall"

echo "== dpkg --purge twoway"
dpkg --purge twoway
for f in /usr/bin/twoway /usr/lib/systemd/system/twoway-server.service /etc/twoway/server.toml.example /var/lib/twoway; do
  [ ! -e "$f" ] || fail "$f is still there after purge"
done
echo "package check passed"
