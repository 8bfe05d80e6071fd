#!/bin/sh
# twoway postremove (deb: postrm; rpm: %postun). Reloads systemd; on purge
# removes the state directory. The twoway user stays (its files may remain
# elsewhere; Debian policy leaves system users in place).
set -e

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
  rm -rf /var/lib/twoway
fi
exit 0
