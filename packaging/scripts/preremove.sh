#!/bin/sh
# twoway preremove (deb: prerm; rpm: %preun). Stops and disables the units
# when the package is removed, not when it is upgraded.
set -e

case "$1" in
  remove|purge|deconfigure|0) ;;
  *) exit 0 ;;   # upgrade (deb "upgrade", rpm 1): postinstall restarts
esac

if [ -d /run/systemd/system ]; then
  for unit in twoway-server twoway-client; do
    systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
  done
fi
exit 0
