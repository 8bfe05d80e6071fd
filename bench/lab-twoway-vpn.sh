# twoway VPN-mode plugin for the anchor benchmark lab (/work/shared/lab/run-all.sh), so that twoway's
# TUN path is measured in the three-namespace lab beside the raw path and wireguard-go in one run:
#
#   cp -r /work/shared/lab /tmp/lab && chmod -R u+w /tmp/lab && cd /tmp/lab
#   sudo PATHS="raw wg plugin:/abs/path/to/twoway/bench/lab-twoway-vpn.sh" ./run-all.sh
#
# or simply bench/vpn.sh, which does that and prints the comparison.
#
# run-all.sh sources this file (in a subshell, after the topology is up, with common.sh's helpers) and
# calls plugin_up / plugin_down. PLUGIN_MODE=tun: the lab measures iperf3, ping and tcprr from lab-client
# to 198.19.1.10 over whatever route lab-client has to 198.19.1.0/24.
#   lab-gw:     twoway server on 198.18.0.2:$TWOWAY_GW_PORT, [vpn] pool $TW_POOL, TUN twg0,
#               pushes the route 198.19.1.0/24, forwards onto the corp LAN
#   lab-client: twoway client with [vpn] enable, TUN twc0
# The lab's contract says a tun plugin routes 198.19.1.0/24 into its device. twoway's client does that
# itself (the gateway pushes the route), so this plugin does not add it: it only checks that the client
# installed exactly one route to the corp LAN and that it points at twc0, then waits for a ping through.
#
# Forwarding: "routed" by default, like the lab's wireguard-go path (lab-corp routes 198.18.0.0/16 back
# via lab-gw, so the pool needs no NAT); TW_FORWARDING=nat masquerades instead (nftables table in lab-gw).
# TW_MTU sets the tunnel MTU the gateway pushes (default: twoway's default, tun.DefaultMTU).
# TW_GOMAXPROCS, when set, is GOMAXPROCS for the two twoway processes only (a side experiment: gateway,
# client, iperf3 and the kernel share the lab's 2 cores; wireguard-go keeps the Go default).
# TW_BIN, when set, is a twoway binary used as is (scripts that bring twoway up many times build it once).
# TW_PATHQ=off sets manage_path_queue = false on both ends (CoDel judges only the tunnel's own queues).
#
# Nothing on the host is touched: the binary, PKI, configs, state_dir and resolv_conf live in a temp dir
# that plugin_down removes (configs and logs are copied to the lab's run/), the control sockets live there too, and
# every device, route, sysctl and nftables rule is inside the lab's namespaces.
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces.

PLUGIN_NAME=${TW_PLUGIN_NAME:-twoway-vpn}
PLUGIN_MODE=tun
TW_TRANSPORT=${TW_TRANSPORT:-auto}   # the client's [vpn] transport: "auto" (UDP while it answers) or "tcp"
if [ "$TW_TRANSPORT" = tcp ]; then
  PLUGIN_NOTE="twoway VPN mode, transport tcp: TUN packets over one TLS1.3 mTLS session (Go crypto/tls) + yamux stream"
else
  PLUGIN_NOTE="twoway VPN mode, transport auto: TUN packets as AES-256-GCM UDP datagrams keyed from the TLS1.3 mTLS session"
fi
TWOWAY_GW_PORT=${TWOWAY_GW_PORT:-9443}
TW_POOL=${TW_POOL:-198.18.30.0/24}   # clear of the lab's 198.18.10/20/21.0/24 tunnel subnets
TW_FORWARDING=${TW_FORWARDING:-routed}
TW_MTU=${TW_MTU:-}
TW_GOMAXPROCS=${TW_GOMAXPROCS:-}
TW_BIN=${TW_BIN:-}   # a twoway binary to use instead of building one from this checkout
TW_GW_TUN=twg0 TW_C_TUN=twc0
TWOWAY_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

plugin_up() {
  TWOWAY_TMP=$(mktemp -d /tmp/twoway-lab-vpn.XXXXXX) || return 1
  local d="$TWOWAY_TMP" tw="$RUN/twoway"
  if [ -n "$TW_BIN" ]; then
    cp "$TW_BIN" "$tw" || { log "twoway: cannot copy $TW_BIN"; return 1; }
  else
    log "twoway: building from $TWOWAY_SRC into $tw"
    (cd "$TWOWAY_SRC" && go build -o "$tw" ./cmd/twoway) || { log "twoway: build failed"; return 1; }
  fi
  PLUGIN_NOTE="$PLUGIN_NOTE; $("$tw" version 2>/dev/null | head -1)"

  "$tw" pki init --dir "$d/pki" --no-password >/dev/null &&
    "$tw" pki issue server --ca "$d/pki/server-ca" --name "$G_IP" --out-dir "$d/certs" >/dev/null &&
    "$tw" pki issue client --ca "$d/pki/client-ca" --name lab-client --group lab --out-dir "$d/certs" >/dev/null ||
    { log "twoway: PKI setup failed"; return 1; }

  # [control] (local status socket, default /run/twoway/ROLE.sock on the host's filesystem) is moved
  # into the run's temporary directory when this checkout knows the key, so that plugin_down can save
  # both ends' `twoway status --json`; older checkouts have no control socket at all.
  local control_gw="" control_client=""
  if grep -q 'toml:"socket"' "$TWOWAY_SRC"/config/*.go 2>/dev/null; then
    control_gw=$'[control]\nsocket = "'"$d/gw.sock"$'"\n'
    control_client=$'[control]\nsocket = "'"$d/client.sock"$'"\n'
  fi
  local mtu="" pathq=""
  [ -n "$TW_MTU" ] && mtu="mtu = $TW_MTU"
  [ "${TW_PATHQ:-}" = off ] && pathq="manage_path_queue = false"

  cat >"$d/server.toml" <<EOF
# twoway gateway in lab-gw for the anchor lab: VPN mode, group "lab" may reach the corp LAN.
listen = "$G_IP:$TWOWAY_GW_PORT"

[tls]
cert = "$d/certs/$G_IP.crt"
key = "$d/certs/$G_IP.key"
client_ca = "$d/pki/client-ca/bundle.crt"

$control_gw
[policy.admit]
groups = ["lab"]

[[policy.rule]]
name = "lab-corp"
groups = ["lab"]
targets = ["$CORP_NET"]

[vpn]
enable = true
ipv4 = "$TW_POOL"
routes = ["$CORP_NET"]
forwarding = "$TW_FORWARDING"
lan_interface = "$GL_IF"
tun = "$TW_GW_TUN"
state_dir = "$d/gw-state"
$mtu
$pathq

[log]
level = "info"
EOF

  : >"$d/resolv.conf"
  cat >"$d/client.toml" <<EOF
# twoway client in lab-client for the anchor lab: VPN mode only, no forwards.
servers = ["$G_IP:$TWOWAY_GW_PORT"]

[tls]
cert = "$d/certs/lab-client.crt"
key = "$d/certs/lab-client.key"
server_ca = "$d/pki/server-ca/bundle.crt"

$control_client
[vpn]
enable = true
tun = "$TW_C_TUN"
state_dir = "$d/client-state"
resolv_conf = "$d/resolv.conf"
transport = "$TW_TRANSPORT"
$pathq

[log]
level = "info"
EOF
  cp "$d/server.toml" "$RUN/$PLUGIN_NAME-gw.toml"
  cp "$d/client.toml" "$RUN/$PLUGIN_NAME-client.toml"

  local envs=()
  [ -n "$TW_GOMAXPROCS" ] && envs=(env "GOMAXPROCS=$TW_GOMAXPROCS")
  client_route_none
  TW_GW_PID=$(start_bg $NS_G "$RUN/$PLUGIN_NAME-gw.log" "${envs[@]}" "$tw" server -c "$d/server.toml")
  wait_for 10 nsx $NS_G bash -c "ss -ltn | grep -q '$G_IP:$TWOWAY_GW_PORT '" ||
    { log "twoway server not listening (see $RUN/$PLUGIN_NAME-gw.log)"; return 1; }
  TW_C_PID=$(start_bg $NS_C "$RUN/$PLUGIN_NAME-client.log" "${envs[@]}" "$tw" client -c "$d/client.toml")
  # "VPN up" is logged after the address, MTU and pushed routes are applied to the TUN device.
  wait_for 15 grep -q 'VPN up' "$RUN/$PLUGIN_NAME-client.log" ||
    { log "twoway client VPN not up (see $RUN/$PLUGIN_NAME-client.log, $RUN/$PLUGIN_NAME-gw.log)"; return 1; }
  if [ "$TW_TRANSPORT" != tcp ]; then
    # Measure the UDP path, not the first moment of the session on the TLS connection.
    wait_for 5 grep -q 'path=udp' "$RUN/$PLUGIN_NAME-client.log" ||
      { log "twoway: the packets did not move to UDP (see $RUN/$PLUGIN_NAME-client.log)"; return 1; }
  fi

  # The client installed the route itself; make sure it is the only one and it uses our device.
  local r n
  r=$(nsx $NS_C ip -4 route show "$CORP_NET")
  n=$(printf '%s\n' "$r" | grep -c .)
  if [ "$n" != 1 ] || ! printf '%s' "$r" | grep -q "dev $TW_C_TUN"; then
    log "twoway: expected one route $CORP_NET dev $TW_C_TUN in $NS_C, got: ${r:-none}"; return 1
  fi
  wait_for 10 nsx $NS_C ping -c1 -W1 "$P_IP" ||
    { log "corp not reachable through twoway (see $RUN/$PLUGIN_NAME-*.log)"; return 1; }
  DAEMON_PIDS="$TW_GW_PID $TW_C_PID"
  local cmtu gmtu
  cmtu=$(nsx $NS_C cat /sys/class/net/$TW_C_TUN/mtu 2>/dev/null)
  gmtu=$(nsx $NS_G cat /sys/class/net/$TW_GW_TUN/mtu 2>/dev/null)
  PLUGIN_NOTE="$PLUGIN_NOTE; tun MTU $cmtu (gw $gmtu), forwarding $TW_FORWARDING${TW_GOMAXPROCS:+, GOMAXPROCS=$TW_GOMAXPROCS}"
  log "twoway VPN up (client pid $TW_C_PID, gw pid $TW_GW_PID), route: $(nsx $NS_C ip route get $P_IP | head -1)"
  log "  $TW_C_TUN offloads: $(nsx $NS_C ethtool -k $TW_C_TUN 2>/dev/null | grep -E '^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload|tx-checksumming):' | tr -s ' \n' ' ')"
}

plugin_down() {
  # What each end counted (queue drops, UDP datagrams, path), for reading the run afterwards.
  local role
  for role in gw client; do
    [ -S "${TWOWAY_TMP:-/nonexistent}/$role.sock" ] &&
      "$RUN/twoway" status --json --socket "$TWOWAY_TMP/$role.sock" >"$RUN/$PLUGIN_NAME-$role-status.json" 2>&1
  done
  # SIGTERM: the client removes its route, address and device; the gateway restores its sysctls
  # (and drops its nftables table with forwarding = "nat").
  stop_pid ${TW_C_PID:-} ${TW_GW_PID:-}
  unset TW_C_PID TW_GW_PID DAEMON_PIDS
  [ -n "${TWOWAY_TMP:-}" ] && rm -rf "$TWOWAY_TMP"
  unset TWOWAY_TMP
}
