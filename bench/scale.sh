#!/usr/bin/env bash
# Scale benchmark on loopback: what the gateway spends per handshake and per idle session, and how fast
# a population comes back after a restart. Prints a Markdown table. See bench/README.md, "Scale".
#
#   bench/scale.sh                          # N=10000 STORM=2000 HS_SECS=10 IDLE_SECS=60: ~4 min
#   N=2000 IDLE_SECS=20 bench/scale.sh      # quicker
#
# 1. Full mutual-TLS handshakes per second, gateway pinned to CPU 0 (taskset), load from CPU 1, for
#    twoway's gateway and for stunnel (the same certificates, TLS 1.3, no resumption on either side).
# 2. N idle twoway sessions (one client each, all from 127.0.0.1): the gateway's RSS, goroutines and heap
#    in use (its metrics endpoint), per session, and its CPU while idle for IDLE_SECS.
# 3. STORM sessions behind one address: the gateway is stopped (SIGTERM) and started again with the
#    default limits; the time until all are back.
#
# The bench config turns off what would only colour the figures: handshake_rate = 0 in part 1 (the
# load closes every handshake before its hello, which the failure budget would charge), and
# max_sessions_per_identity = 0 (all sessions use one certificate). Parts 2 and 3 keep the other limits
# at their defaults.
#
# SAFETY: every socket is on 127.0.0.1; processes are started by this script and stopped by PID.
set -euo pipefail

N=${N:-10000}
STORM=${STORM:-2000}
HS_SECS=${HS_SECS:-10}
IDLE_SECS=${IDLE_SECS:-60}
WORKERS=${WORKERS:-8}

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || die "stunnel missing (apt-get install stunnel4)"
command -v taskset >/dev/null || die "taskset missing (util-linux)"
STUNNEL=$(command -v stunnel4 || command -v stunnel)
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

T=$(mktemp -d "${TMPDIR:-/tmp}/twoway-scale.XXXXXX")
PIDS=()
stop_pid() {
  local p=$1 i
  kill -0 "$p" 2>/dev/null || return 0
  kill "$p" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local i
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_pid "${PIDS[$i]}"; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_bg() { local lf=$1; shift; "$@" >"$lf" 2>&1 </dev/null & LAST_PID=$!; PIDS+=("$LAST_PID"); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { local hex; hex=$(printf '%04X' "$1"); awk -v p=":$hex" '$4=="0A" && substr($2, length($2)-4)==p {f=1} END{exit !f}' /proc/net/tcp; }
wait_listen() {
  local i
  for i in $(seq 1 100); do listening "$1" && return 0; kill -0 "$2" 2>/dev/null || die "$3 exited: $(tail -5 "$T/$3.log")"; sleep 0.1; done
  die "$3 not listening on $1"
}
HZ=$(getconf CLK_TCK)
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
metric() { curl -s "http://127.0.0.1:$MP/metrics" | awk -v m="$1" '$1==m {print $2}'; }

log "building twoway and scaleload into $T"
(cd "$ROOT" && go build -o "$T/twoway" ./cmd/twoway) || die "go build ./cmd/twoway failed"
(cd "$BENCH/scaleload" && go build -o "$T/scaleload" .) || die "go build bench/scaleload failed"
TW="$T/twoway" LOAD="$T/scaleload"
"$TW" pki init --dir "$T/pki" --no-password >/dev/null
"$TW" pki issue server --ca "$T/pki/server-ca" --name 127.0.0.1 --out-dir "$T/certs" >/dev/null
"$TW" pki issue client --ca "$T/pki/client-ca" --name bench --group bench --out-dir "$T/certs" >/dev/null
SRV_CRT="$T/certs/127.0.0.1.crt" SRV_KEY="$T/certs/127.0.0.1.key"
CLI_CRT="$T/certs/bench.crt" CLI_KEY="$T/certs/bench.key"
SERVER_BUNDLE="$T/pki/server-ca/bundle.crt" CLIENT_BUNDLE="$T/pki/client-ca/bundle.crt"

GP=$(free_port) MP=$(free_port) SP=$(free_port) BP=$(free_port)
server_toml() { # server_toml HANDSHAKE_RATE_LINE
  cat >"$T/server.toml" <<EOF
listen = "127.0.0.1:$GP"
[tls]
cert = "$SRV_CRT"
key = "$SRV_KEY"
client_ca = "$CLIENT_BUNDLE"
[limits]
max_sessions_per_identity = 0   # one certificate for every session
$1
[metrics]
listen = "127.0.0.1:$MP"
[policy.admit]
groups = ["bench"]
[log]
level = "warn"
EOF
}
start_gateway() {
  start_bg "$T/gateway.log" taskset -c 0 "$TW" server -c "$T/server.toml"; GW=$LAST_PID
  wait_listen "$GP" "$GW" gateway
}

# ---------------------------------------------------------------- 1. handshakes per second
server_toml "handshake_rate = 0"
start_gateway
log "twoway: handshakes for ${HS_SECS}s"
TW_HS=$(taskset -c 1 "$LOAD" -mode hs -addr "127.0.0.1:$GP" -cert "$CLI_CRT" -key "$CLI_KEY" -ca "$SERVER_BUNDLE" -alpn twoway/1 -c "$WORKERS" -t "${HS_SECS}s" | awk '{print $6}')
stop_pid "$GW"

cat >"$T/stunnel.conf" <<EOF
foreground = yes
pid =
debug = warning
syslog = no
[hs]
accept = 127.0.0.1:$SP
connect = 127.0.0.1:$BP
cert = $SRV_CRT
key = $SRV_KEY
CAfile = $CLIENT_BUNDLE
requireCert = yes
verifyChain = yes
sslVersionMin = TLSv1.3
sessionCacheSize = 1
EOF
start_bg "$T/backend.log" python3 -c "
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$BP)); s.listen(4096)
while True:
    c,_=s.accept(); c.close()"
start_bg "$T/stunnel.log" taskset -c 0 "$STUNNEL" "$T/stunnel.conf"; ST=$LAST_PID
wait_listen "$SP" "$ST" stunnel
log "stunnel: handshakes for ${HS_SECS}s"
ST_HS=$(taskset -c 1 "$LOAD" -mode hs -addr "127.0.0.1:$SP" -cert "$CLI_CRT" -key "$CLI_KEY" -ca "$SERVER_BUNDLE" -c "$WORKERS" -t "${HS_SECS}s" | awk '{print $6}')
stop_pid "$ST"

# ---------------------------------------------------------------- 2. idle sessions
server_toml ""
start_gateway
BASE_RSS=$(awk '/VmRSS/{print $2}' "/proc/$GW/status")
log "$N idle sessions"
start_bg "$T/load.log" taskset -c 1 "$LOAD" -mode idle -addr "127.0.0.1:$GP" -cert "$CLI_CRT" -key "$CLI_KEY" -ca "$SERVER_BUNDLE" -n "$N"; LD=$LAST_PID
for _ in $(seq 1 1200); do
  [ "$(metric twoway_sessions)" = "$N" ] && break
  kill -0 "$LD" 2>/dev/null || die "load exited: $(tail -3 "$T/load.log")"
  sleep 0.5
done
[ "$(metric twoway_sessions)" = "$N" ] || die "only $(metric twoway_sessions) of $N sessions after 10 min"
UP_SECS=$(awk '/^up /{t=$3} END{print t}' "$T/load.log")
log "all $N up in ${UP_SECS}s; idle for ${IDLE_SECS}s"
t0=$(ticks "$GW"); sleep "$IDLE_SECS"; t1=$(ticks "$GW")
RSS=$(awk '/VmRSS/{print $2}' "/proc/$GW/status")
GOR=$(metric go_goroutines)
HEAP=$(metric go_memstats_heap_inuse_bytes)
IDLE_CPU=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$IDLE_SECS" 'BEGIN{printf "%.1f", 100*(b-a)/hz/s}')
stop_pid "$LD"
for _ in $(seq 1 120); do [ "$(metric twoway_sessions)" = "0" ] && break; sleep 0.5; done
sleep 5
AFTER_RSS=$(awk '/VmRSS/{print $2}' "/proc/$GW/status")
stop_pid "$GW"

# ---------------------------------------------------------------- 3. restart storm
start_gateway
log "storm: $STORM sessions, then a gateway restart"
start_bg "$T/storm.log" taskset -c 1 "$LOAD" -mode idle -addr "127.0.0.1:$GP" -cert "$CLI_CRT" -key "$CLI_KEY" -ca "$SERVER_BUNDLE" -n "$STORM"; LD=$LAST_PID
for _ in $(seq 1 600); do [ "$(metric twoway_sessions)" = "$STORM" ] && break; sleep 0.5; done
stop_pid "$GW"
s0=$(date +%s.%N)
start_gateway
for _ in $(seq 1 1200); do [ "$(metric twoway_sessions)" = "$STORM" ] && break; sleep 0.1; done
s1=$(date +%s.%N)
BACK=$(metric twoway_sessions)
STORM_SECS=$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.1f", b-a}')
stop_pid "$LD"; stop_pid "$GW"

per() { awk -v a="$1" -v n="$2" 'BEGIN{printf "%.1f", a/n}'; }
cat <<EOF

Scale on loopback ($(date -Iseconds); $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo); gateway on CPU 0, load on CPU 1)

| measure | twoway | stunnel |
| --- | ---: | ---: |
| full mutual-TLS handshakes/s, one gateway core ($WORKERS concurrent, ${HS_SECS}s) | $TW_HS | $ST_HS |
| $N idle sessions: gateway RSS (KiB per session, above the idle gateway's $BASE_RSS KiB) | $(per $((RSS-BASE_RSS)) "$N") | |
| ... goroutines per session | $(per "$GOR" "$N") | |
| ... heap in use (KiB per session) | $(per "$(awk -v h="$HEAP" 'BEGIN{print h/1024}')" "$N") | |
| ... gateway CPU while idle for ${IDLE_SECS}s (% of a core) | $IDLE_CPU | |
| ... time for all $N to connect (s) | $UP_SECS | |
| ... RSS after they all closed (KiB; idle gateway $BASE_RSS) | $AFTER_RSS | |
| restart with $STORM sessions behind one address: back after (s), default limits | $STORM_SECS ($BACK back) | |
EOF
