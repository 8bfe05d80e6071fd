#!/bin/sh
# twoway postinstall (deb: configure; rpm: %post). Creates the twoway system
# user and the state directory, and reloads systemd. Idempotent. The units
# are not enabled: they need /etc/twoway/server.toml or client.toml first.
set -e

user=twoway
statedir=/var/lib/twoway

nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/sbin/nologin
[ -x "$nologin" ] || nologin=/bin/false

if ! getent group "$user" >/dev/null 2>&1; then
  if command -v groupadd >/dev/null 2>&1; then
    groupadd --system "$user"
  elif command -v addgroup >/dev/null 2>&1; then
    addgroup --system "$user"
  fi
fi
if ! getent passwd "$user" >/dev/null 2>&1; then
  if command -v useradd >/dev/null 2>&1; then
    useradd --system --gid "$user" --home-dir "$statedir" --no-create-home \
      --shell "$nologin" --comment "twoway tunnel daemon" "$user"
  elif command -v adduser >/dev/null 2>&1; then
    adduser --system --ingroup "$user" --home "$statedir" --no-create-home \
      --shell "$nologin" --gecos "twoway tunnel daemon" "$user"
  else
    echo "twoway: cannot create the $user user (no useradd or adduser); the units will fail until it exists" >&2
  fi
fi

install -d -m 0750 "$statedir"
if getent passwd "$user" >/dev/null 2>&1; then
  chown "$user:$user" "$statedir"
fi
# The daemon reads its keys from here; only root and the group may look in.
if [ -d /etc/twoway ]; then
  chgrp "$user" /etc/twoway 2>/dev/null || true
  chmod 0750 /etc/twoway
fi

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  # On upgrade, restart what was running so the new binary takes over.
  for unit in twoway-server twoway-client; do
    systemctl try-restart "$unit.service" || true
  done
fi

first_install=
case "$1" in
  configure) [ -z "$2" ] && first_install=1 ;;
  1) first_install=1 ;;
esac
if [ -n "$first_install" ]; then
  cat <<'MSG'
twoway installed. To run the gateway (or the client, likewise):
  cp /etc/twoway/server.toml.example /etc/twoway/server.toml   # and edit it
  chown twoway /etc/twoway/*.key                                # keys must be readable by twoway
  twoway config check -c /etc/twoway/server.toml
  systemctl enable --now twoway-server
MSG
fi
exit 0
