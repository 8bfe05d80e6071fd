# twoway port-forward plugin for the anchor benchmark lab (/work/shared/lab/run-all.sh), so that
# twoway's -L forward is measured in the three-namespace lab beside stunnel in one run:
#
#   cp -r /work/shared/lab /tmp/lab && cd /tmp/lab
#   sudo PATHS="raw stunnel plugin:/abs/path/to/twoway/bench/lab-twoway-fwd.sh" ./run-all.sh
#
# run-all.sh sources this file (in a subshell, after the topology is up, with common.sh's helpers) and
# calls plugin_up / plugin_down. The path mirrors the lab's stunnel one:
#   lab-client: twoway forward, 127.0.0.1:$PLUGIN_PORT -> 198.19.1.10:5201 (iperf3),
#               127.0.0.1:$PLUGIN_RR_PORT -> 198.19.1.10:7000 (tcprr)
#   --one mutual TLS 1.3 session over the "internet" veth-->
#   lab-gw: twoway server on 198.18.0.2:$TWOWAY_GW_PORT, dials lab-corp
# lab-client has no route to corp during the test, so the traffic can only go through twoway.
# A throwaway PKI made by `twoway pki` and the binary live in a temp dir that plugin_down removes.
#
# SAFETY: only the lab's 198.18.0.0/15 addresses and 127.0.0.1, inside the lab's namespaces.

PLUGIN_NAME=twoway-fwd
PLUGIN_MODE=fwd
PLUGIN_PORT=25201
PLUGIN_RR_PORT=27000
PLUGIN_NOTE="twoway -L port-forward, one TLS1.3 mTLS session (Go crypto/tls), a yamux stream per TCP conn"
TWOWAY_GW_PORT=9443
TWOWAY_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

plugin_up() {
  TWOWAY_TMP=$(mktemp -d /tmp/twoway-lab.XXXXXX) || return 1
  local tw="$TWOWAY_TMP/twoway" d="$TWOWAY_TMP"
  log "twoway: building from $TWOWAY_SRC"
  (cd "$TWOWAY_SRC" && go build -o "$tw" ./cmd/twoway) || { log "twoway: build failed"; return 1; }
  PLUGIN_NOTE="$PLUGIN_NOTE; $("$tw" version 2>/dev/null | head -1)"

  "$tw" pki init --dir "$d/pki" --no-password >/dev/null &&
    "$tw" pki issue server --ca "$d/pki/server-ca" --name "$G_IP" --out-dir "$d/certs" >/dev/null &&
    "$tw" pki issue client --ca "$d/pki/client-ca" --name lab-client --group lab --out-dir "$d/certs" >/dev/null ||
    { log "twoway: PKI setup failed"; return 1; }

  cat >"$d/server.toml" <<EOF
# twoway gateway in lab-gw for the anchor lab: admits group "lab" to the corp iperf3 and tcprr servers only.
listen = "$G_IP:$TWOWAY_GW_PORT"

[tls]
cert = "$d/certs/$G_IP.crt"
key = "$d/certs/$G_IP.key"
client_ca = "$d/pki/client-ca/bundle.crt"

[policy.admit]
groups = ["lab"]

[[policy.rule]]
name = "lab-corp-servers"
groups = ["lab"]
targets = ["$P_IP:$IPERF_PORT", "$P_IP:$RR_PORT"]
protocols = ["tcp"]

[log]
level = "info"
EOF
  cp "$d/server.toml" "$RUN/twoway-gw.toml"

  client_route_none
  local envs=(env); [ -n "${TW_GOMAXPROCS:-}" ] && envs=(env "GOMAXPROCS=$TW_GOMAXPROCS")
  TW_GW_PID=$(start_bg $NS_G "$RUN/twoway-gw.log" "${envs[@]}" "$tw" server -c "$d/server.toml")
  wait_for 5 nsx $NS_G bash -c "ss -ltn | grep -q '$G_IP:$TWOWAY_GW_PORT '" ||
    { log "twoway server not listening (see $RUN/twoway-gw.log)"; return 1; }
  TW_C_PID=$(start_bg $NS_C "$RUN/twoway-client.log" "${envs[@]}" "$tw" forward --server "$G_IP:$TWOWAY_GW_PORT" \
    --cert "$d/certs/lab-client.crt" --key "$d/certs/lab-client.key" --ca "$d/pki/server-ca/bundle.crt" \
    -L "127.0.0.1:$PLUGIN_PORT:$P_IP:$IPERF_PORT" -L "127.0.0.1:$PLUGIN_RR_PORT:$P_IP:$RR_PORT")
  wait_for 5 nsx $NS_C bash -c "ss -ltn | grep -q '127.0.0.1:$PLUGIN_PORT '" ||
    { log "twoway forward not listening (see $RUN/twoway-client.log)"; return 1; }
  # The listeners may be up before the session: wait until one round trip goes through end to end.
  wait_for 10 nsx $NS_C tcprr -mode client -addr "127.0.0.1:$PLUGIN_RR_PORT" -n 1 ||
    { log "twoway forward does not carry traffic (see $RUN/twoway-client.log, $RUN/twoway-gw.log)"; return 1; }
  DAEMON_PIDS="$TW_GW_PID $TW_C_PID"
  log "twoway up (forward pid $TW_C_PID, gateway pid $TW_GW_PID)"
}

plugin_down() {
  stop_pid ${TW_C_PID:-} ${TW_GW_PID:-}
  unset TW_C_PID TW_GW_PID DAEMON_PIDS
  [ -n "${TWOWAY_TMP:-}" ] && rm -rf "$TWOWAY_TMP"
  unset TWOWAY_TMP
}
