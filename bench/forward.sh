#!/usr/bin/env bash
# Forwarding benchmark on loopback: the same iperf3 and connection-setup measurements, in one run, for
#   raw      iperf3 client -> iperf3 server (no forwarder)
#   stunnel  stunnel4 client -> mutual TLS 1.3 -> stunnel4 server -> iperf3 server (one TLS conn per TCP conn)
#   twoway   twoway forward -L -> one mutual TLS 1.3 session, one yamux stream per TCP conn -> twoway server -> iperf3 server
# Both forwarders use one throwaway PKI made by `twoway pki`. Prints a Markdown table, then the tunnel
# package's Go benchmarks. See bench/README.md.
#
#   bench/forward.sh                           # REPS=3 SECS=5 K=200: ~2.5 min, then the Go benchmarks (~1 min)
#   REPS=1 SECS=2 GOBENCH=0 bench/forward.sh   # quick look, ~20 s
#   PROFILE=1 bench/forward.sh                 # also perf profiles of both twoway processes (one 1-stream run)
#
# Environment: REPS (runs per figure, median taken; default 3), SECS (iperf3 -t; default 5),
# K (connections per setup measurement; default 200), PATHS (default "raw stunnel twoway"),
# GOBENCH (1: run `go test -bench . ./tunnel/` at the end; default 1), BENCHTIME (default 2s),
# PROFILE (1: perf profile of twoway server and forward, kept in PROFILE_DIR, default ./bench-profile),
# KEEP (1: keep the temp dir with logs, configs and iperf3 JSON instead of removing it).
#
# SAFETY: every socket is on 127.0.0.1. Processes are started by this script only and stopped by PID;
# the temp dir is removed at exit.
set -euo pipefail

REPS=${REPS:-3}
SECS=${SECS:-5}
K=${K:-200}
PATHS=${PATHS:-"raw stunnel twoway"}
GOBENCH=${GOBENCH:-1}
BENCHTIME=${BENCHTIME:-2s}
PROFILE=${PROFILE:-0}
PROFILE_DIR=${PROFILE_DIR:-$PWD/bench-profile}

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need=""
command -v iperf3 >/dev/null || need="$need iperf3"
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need="$need stunnel4"
command -v python3 >/dev/null || need="$need python3"
if [ -n "$need" ]; then
  [ "$(id -u)" = 0 ] || die "missing:$need (install them, or run as root to apt-get install)"
  log "installing from apt:$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)
command -v go >/dev/null || die "go not found (PATH has /usr/local/go/bin)"

# ---------------------------------------------------------------- process and temp-dir bookkeeping
T=$(mktemp -d "${TMPDIR:-/tmp}/twoway-bench.XXXXXX")
PIDS=()
stop_pid() { # stop_pid PID : TERM, then KILL after 3 s; only PIDs this script started
  local p=$1 i
  kill -0 "$p" 2>/dev/null || return 0
  kill "$p" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local i
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_pid "${PIDS[$i]}"; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $T (logs, configs, iperf3 JSON)"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOG cmd... : run in the background, record the PID in PIDS and in $LAST_PID.
# (Not $(start_bg ...): a subshell would make the process a grandchild we cannot wait for.)
start_bg() {
  local lf=$1; shift
  "$@" >"$lf" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

untrack() { # untrack PID : forget a PID that has been waited for
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# listening PORT : is something listening on 127.0.0.1:PORT? (/proc, so that probing does not open a
# connection through a forwarder)
listening() {
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$4=="0A" && substr($2, length($2)-4)==p {f=1} END{exit !f}' /proc/net/tcp
}
wait_listen() { # wait_listen PORT PID WHAT
  local i
  for i in $(seq 1 100); do
    listening "$1" && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited (see its log below)"$'\n'"$(tail -20 "$T/$3.log" 2>/dev/null)"
    sleep 0.1
  done
  die "$3 not listening on 127.0.0.1:$1 after 10 s"$'\n'"$(tail -20 "$T/$3.log" 2>/dev/null)"
}

# free_port : a currently unused loopback port (the kernel picks it; tiny race until we bind it)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

median() { sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "nan"; exit} if(NR%2){print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2} }'; }

# CPU accounting: utime+stime of the given PIDs, and whole-machine busy time, from /proc.
HZ=$(getconf CLK_TCK)
proc_ticks() {
  local s=0 p v
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    v=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12+$13}')
    s=$((s+v))
  done
  echo "$s"
}
# proc_counters PID... : "read-syscalls write-syscalls context-switches" summed over the processes and
# all their threads (/proc/PID/io and /proc/PID/task/*/status; readable for our own processes).
proc_counters() {
  local p r=0 w=0 x=0 v
  for p in "$@"; do
    [ -r "/proc/$p/io" ] || continue
    v=$(awk '/^syscr:/{r=$2} /^syscw:/{w=$2} END{print r+0, w+0}' "/proc/$p/io" 2>/dev/null || echo "0 0")
    r=$((r+${v% *})); w=$((w+${v#* }))
    v=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches:/{s+=$2} END{print s+0}')
    x=$((x+v))
  done
  echo "$r $w $x"
}
sys_sample() { awk '/^cpu /{idle=$5+$6; tot=0; for(i=2;i<=9;i++) tot+=$i; print tot, idle}' /proc/stat; }

# ---------------------------------------------------------------- a quiet machine
# Another benchmark (an iperf3 of bench/vpn.sh, the lab's run-all.sh) would skew every figure on 2 cores:
# wait for it.
WARN=""
busy() { pgrep -x iperf3 >/dev/null || pgrep -f 'run-all\.sh' >/dev/null; }
for i in $(seq 1 180); do
  busy || break
  [ "$i" = 1 ] && log "another benchmark (iperf3 or the lab's run-all.sh) is running; waiting for it to finish (up to 15 min)"
  sleep 5
done
if busy; then
  WARN="WARNING: another benchmark ran during this one; the figures are skewed."
  log "$WARN"
fi
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- build and PKI
log "building twoway and connrtt into $T"
(cd "$ROOT" && go build -o "$T/twoway" ./cmd/twoway) || die "go build ./cmd/twoway failed"
(cd "$BENCH/connrtt" && go build -o "$T/connrtt" .) || die "go build bench/connrtt failed"
TW="$T/twoway"

"$TW" pki init --dir "$T/pki" --no-password >/dev/null
"$TW" pki issue server --ca "$T/pki/server-ca" --name 127.0.0.1 --out-dir "$T/certs" >/dev/null
"$TW" pki issue client --ca "$T/pki/client-ca" --name bench --group bench --out-dir "$T/certs" >/dev/null
SRV_CRT="$T/certs/127.0.0.1.crt" SRV_KEY="$T/certs/127.0.0.1.key"
CLI_CRT="$T/certs/bench.crt" CLI_KEY="$T/certs/bench.key"
SERVER_BUNDLE="$T/pki/server-ca/bundle.crt" CLIENT_BUNDLE="$T/pki/client-ca/bundle.crt"

# ---------------------------------------------------------------- targets: iperf3 server, echo server
IPERF_PORT=$(free_port)
start_bg "$T/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
wait_listen "$IPERF_PORT" "$LAST_PID" iperf3-server
start_bg "$T/echo.log" "$T/connrtt" -serve 127.0.0.1:0
ECHO_PID=$LAST_PID
for _ in $(seq 1 100); do grep -q '^ready ' "$T/echo.log" && break; kill -0 "$ECHO_PID" || die "echo server exited"; sleep 0.1; done
ECHO_PORT=$(awk '/^ready /{n=split($2,a,":"); print a[n]}' "$T/echo.log")
[ -n "$ECHO_PORT" ] || die "echo server did not report its port"
log "targets: iperf3 127.0.0.1:$IPERF_PORT, echo 127.0.0.1:$ECHO_PORT"

# ---------------------------------------------------------------- measurement
# iperf_json FILE : "Gbit/s sender-cpu% receiver-cpu% retransmits" from iperf3 -J output
iperf_json() {
  python3 - "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    e = d["end"]
    cpu = e.get("cpu_utilization_percent", {})
    print("%.3f %.0f %.0f %s" % (e["sum_received"]["bits_per_second"] / 1e9,
          cpu.get("host_total", float("nan")), cpu.get("remote_total", float("nan")),
          e.get("sum_sent", {}).get("retransmits", "nan")))
except Exception as ex:  # a failed run: iperf3 writes {"error": ...}
    print("0 nan nan nan")
    print("iperf3 %s: %s" % (sys.argv[1], d.get("error", ex) if "d" in dir() else ex), file=sys.stderr)
PY
}

# iperf_once NAME PARALLEL REP : one iperf3 run through NAME's path; appends
#   "Gbit/s forwarder%core machine-busy% iperf3-snd% iperf3-rcv%" to $T/NAME.P<PARALLEL>.tsv and
#   "reads/MiB writes/MiB ctxsw/MiB" (forwarder processes, both ends) to $T/NAME.P<PARALLEL>.sys.tsv.
iperf_once() {
  local name=$1 par=$2 r=$3 out="$T/$1.P$2" dp=${DPIDS[$1]}
  local c0 c1 d0 d1 s0 s1 t0 tc t1 res busy dmn ipid
  c0=$(proc_counters $dp); s0=$(sys_sample); d0=$(proc_ticks $dp); t0=$(date +%s.%N)
  iperf3 -c 127.0.0.1 -p "${IPORT[$name]}" -t "$SECS" -P "$par" -J >"$out.run$r.json" 2>&1 &
  ipid=$!; PIDS+=("$ipid")
  # Syscall and context-switch counters are read while the transfer still runs: stunnel's
  # per-connection threads take their context-switch counts with them when they exit.
  sleep "$(awk -v s="$SECS" 'BEGIN{print s*0.8}')"
  c1=$(proc_counters $dp); tc=$(date +%s.%N)
  wait "$ipid" || log "  iperf3 $name -P $par run $r failed (see $out.run$r.json)"
  untrack "$ipid"
  t1=$(date +%s.%N); d1=$(proc_ticks $dp); s1=$(sys_sample)
  res=$(iperf_json "$out.run$r.json")
  busy=$(echo "$s0 $s1" | awk '{dt=$3-$1; di=$4-$2; if(dt>0) printf "%.0f", 100*(dt-di)/dt; else print "nan"}')
  dmn=$(awk -v a="$d0" -v b="$d1" -v hz="$HZ" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.0f", 100*(b-a)/hz/(t1-t0)}')
  set -- $res
  printf "%s\t%s\t%s\t%s\t%s\n" "$1" "$dmn" "$busy" "$2" "$3" >>"$out.tsv"
  # ... and CPU seconds (both ends) per GB carried, which load from elsewhere distorts less than Gbit/s.
  echo "$c0 $c1 $1 $t0 $tc $d0 $d1" | awk -v hz="$HZ" -v secs="$SECS" '{mib=$7*1e9/8*($9-$8)/1048576; gb=$7*secs/8;
    if (mib>0) printf "%.1f\t%.1f\t%.1f\t%.3f\n", ($4-$1)/mib, ($5-$2)/mib, ($6-$3)/mib, ($11-$10)/hz/gb; else print "nan\tnan\tnan\tnan"}' >>"$out.sys.tsv"
  log "  $name -P $par run $r: $1 Gbit/s  forwarder=${dmn}% of a core  machine busy=${busy}% of $(nproc) cores  iperf3 snd/rcv cpu=$2/$3%  retr=$4"
}

# conn_once NAME REP : K short connections through NAME's path; appends their median (ms) to $T/NAME.conn.
# The first run of each path doubles as the check that the path works end to end (-wait).
conn_once() {
  local name=$1 r=$2 f="$T/$1.conn"
  if ! "$T/connrtt" -addr "127.0.0.1:${EPORT[$name]}" -n "$K" -wait 10s >"$f.run$r" 2>&1; then
    log "  $name conn setup run $r failed: $(cat "$f.run$r")"
    return 1
  fi
  log "  $name conn setup run $r: $(cut -d' ' -f2- "$f.run$r")"
  awk '/^RESULT/{for(i=2;i<NF;i+=2) if($i=="median_ms") print $(i+1)}' "$f.run$r" >>"$f"
}

# Per-path state, filled by the up_* functions: the local ports for iperf3 and echo, the forwarder's
# PIDs (both ends; empty for raw) and the notes column.
declare -A IPORT EPORT DPIDS NOTE
UP=()

up_raw() {
  IPORT[raw]=$IPERF_PORT EPORT[raw]=$ECHO_PORT DPIDS[raw]="" NOTE[raw]="kernel loopback, no forwarder"
  UP+=(raw)
}

up_stunnel() {
  local sp1 sp2 ss1 ss2 gw cl
  sp1=$(free_port); sp2=$(free_port); ss1=$(free_port); ss2=$(free_port)
  # Options mirror the lab's stunnel/*.conf.in: mutual TLS 1.3, chains verified both ways.
  # checkIP instead of the lab's checkHost: the server certificate names 127.0.0.1 as an IP SAN.
  # syslog = no: with no /dev/log, stunnel's syslog falls back to /dev/console, and those slow
  # console writes (under stunnel's log lock) made every connection ~20 ms slower.
  cat >"$T/stunnel-server.conf" <<EOF
foreground = yes
pid =
debug = info
syslog = no

[iperf]
accept = 127.0.0.1:$ss1
connect = 127.0.0.1:$IPERF_PORT
cert = $SRV_CRT
key = $SRV_KEY
CAfile = $CLIENT_BUNDLE
requireCert = yes
verifyChain = yes
checkHost = bench
sslVersionMin = TLSv1.3

[echo]
accept = 127.0.0.1:$ss2
connect = 127.0.0.1:$ECHO_PORT
cert = $SRV_CRT
key = $SRV_KEY
CAfile = $CLIENT_BUNDLE
requireCert = yes
verifyChain = yes
checkHost = bench
sslVersionMin = TLSv1.3
EOF
  cat >"$T/stunnel-client.conf" <<EOF
foreground = yes
pid =
debug = info
syslog = no

[iperf]
client = yes
accept = 127.0.0.1:$sp1
connect = 127.0.0.1:$ss1
cert = $CLI_CRT
key = $CLI_KEY
CAfile = $SERVER_BUNDLE
verifyChain = yes
checkIP = 127.0.0.1
sslVersionMin = TLSv1.3

[echo]
client = yes
accept = 127.0.0.1:$sp2
connect = 127.0.0.1:$ss2
cert = $CLI_CRT
key = $CLI_KEY
CAfile = $SERVER_BUNDLE
verifyChain = yes
checkIP = 127.0.0.1
sslVersionMin = TLSv1.3
EOF
  start_bg "$T/stunnel-server.log" "$STUNNEL" "$T/stunnel-server.conf"; gw=$LAST_PID
  wait_listen "$ss1" "$gw" stunnel-server; wait_listen "$ss2" "$gw" stunnel-server
  start_bg "$T/stunnel-client.log" "$STUNNEL" "$T/stunnel-client.conf"; cl=$LAST_PID
  wait_listen "$sp1" "$cl" stunnel-client; wait_listen "$sp2" "$cl" stunnel-client
  IPORT[stunnel]=$sp1 EPORT[stunnel]=$sp2 DPIDS[stunnel]="$gw $cl" NOTE[stunnel]="@STUNNEL_NOTE@"
  UP+=(stunnel)
}

# stunnel_note : what stunnel's connections negotiated, from its client log (called after the runs).
stunnel_note() {
  local c full resumed
  c=$(grep -m1 -oE 'TLSv1\.3 ciphersuite: [A-Z0-9_]+' "$T/stunnel-client.log" | awk '{print $3}' || true)
  full=$(grep -c 'new session negotiated' "$T/stunnel-client.log" || true)
  resumed=$(grep -c 'previous session reused' "$T/stunnel-client.log" || true)
  echo "stunnel $("$STUNNEL" -version 2>&1 | grep -m1 -oE 'stunnel [0-9.]+' | cut -d' ' -f2), one TLS 1.3 connection per TCP conn, ${c:-cipher ?}; $full full handshakes, $resumed resumed (stunnel's default session cache)"
}

up_twoway() {
  if ! "$TW" server --help >/dev/null 2>&1 || ! "$TW" forward --help >/dev/null 2>&1; then
    log "twoway: this build has no 'server'/'forward' command; path skipped"
    return
  fi
  local gp lp1 lp2 srv fwd
  gp=$(free_port); lp1=$(free_port); lp2=$(free_port)
  cat >"$T/server.toml" <<EOF
# twoway gateway for bench/forward.sh: loopback only, admits group "bench" to the two targets.
listen = "127.0.0.1:$gp"

[tls]
cert = "$SRV_CRT"
key = "$SRV_KEY"
client_ca = "$CLIENT_BUNDLE"

[limits]
handshake_rate = 0    # the benchmark reconnects nothing, but never let the limiter colour a figure

[policy.admit]
groups = ["bench"]

[[policy.rule]]
name = "bench-targets"
groups = ["bench"]
targets = ["127.0.0.1:$IPERF_PORT", "127.0.0.1:$ECHO_PORT"]
protocols = ["tcp"]

[log]
level = "info"    # per session, not per stream: it names the negotiated cipher for the notes
EOF
  start_bg "$T/twoway-server.log" "$TW" server -c "$T/server.toml"; srv=$LAST_PID
  wait_listen "$gp" "$srv" twoway-server
  start_bg "$T/twoway-forward.log" "$TW" --log-level warn forward --server "127.0.0.1:$gp" \
    --cert "$CLI_CRT" --key "$CLI_KEY" --ca "$SERVER_BUNDLE" \
    -L "127.0.0.1:$lp1:127.0.0.1:$IPERF_PORT" -L "127.0.0.1:$lp2:127.0.0.1:$ECHO_PORT"
  fwd=$LAST_PID
  wait_listen "$lp1" "$fwd" twoway-forward; wait_listen "$lp2" "$fwd" twoway-forward
  IPORT[twoway]=$lp1 EPORT[twoway]=$lp2 DPIDS[twoway]="$srv $fwd"
  NOTE[twoway]="twoway $("$TW" version 2>/dev/null | head -1 | awk '{print $2}'), one TLS 1.3 session for all TCP conns, a yamux stream each, @TWOWAY_CIPHER@"
  UP+=(twoway)
}

# profile_twoway SERVER_PID FORWARD_PID PORT : perf CPU profile of both twoway processes during one
# 1-stream iperf3 run; reports kept in PROFILE_DIR.
profile_twoway() {
  command -v perf >/dev/null || { log "PROFILE=1 needs perf (linux-perf); skipped"; return; }
  mkdir -p "$PROFILE_DIR"
  local p name perfpids=()
  log "== profiling twoway server and forward during one ${SECS}s 1-stream run -> $PROFILE_DIR"
  for p in "$1:server" "$2:forward"; do
    name=${p#*:}
    perf record -F 499 -g -p "${p%%:*}" -o "$PROFILE_DIR/perf-$name.data" -- sleep "$SECS" >/dev/null 2>&1 &
    PIDS+=("$!"); perfpids+=("$!")
  done
  iperf3 -c 127.0.0.1 -p "$3" -t "$SECS" -J >"$PROFILE_DIR/iperf3.json" 2>&1 || true
  for p in "${perfpids[@]}"; do wait "$p" 2>/dev/null || true; untrack "$p"; done
  for name in server forward; do
    perf report -i "$PROFILE_DIR/perf-$name.data" --stdio --no-children --sort symbol 2>/dev/null \
      | grep -E '^ +[0-9]' | head -25 >"$PROFILE_DIR/top-$name.txt" || true
    log "  top of twoway $name (self time):"; sed 's/^/    /' "$PROFILE_DIR/top-$name.txt" | head -15 >&2
  done
}

# ---------------------------------------------------------------- run
# Every path is up at once and the runs are interleaved (rep 1: raw stunnel twoway, rep 2: stunnel
# twoway raw, ...), so that a burst of load from elsewhere on the machine does not land on one path only.
for p in $PATHS; do
  case $p in
    raw) up_raw ;;
    stunnel) up_stunnel ;;
    twoway) up_twoway ;;
    *) die "unknown path $p (raw stunnel twoway)" ;;
  esac
done
[ ${#UP[@]} -gt 0 ] || die "no path to measure"
log "paths up: ${UP[*]}; $REPS rounds of: $K connections, iperf3 -t $SECS -P 1, -P 8"
for r in $(seq 1 "$REPS"); do
  n=${#UP[@]}
  for ((i=0; i<n; i++)); do
    name=${UP[$(( (i + r - 1) % n ))]}
    log "== round $r: $name"
    if ! conn_once "$name" "$r" && [ "$r" = 1 ]; then die "$name does not carry connections"; fi
    iperf_once "$name" 1 "$r"
    iperf_once "$name" 8 "$r"
  done
done
if [ "$PROFILE" = 1 ] && [ -n "${DPIDS[twoway]:-}" ]; then
  set -- ${DPIDS[twoway]}; profile_twoway "$1" "$2" "${IPORT[twoway]}"
fi
[ -n "${DPIDS[stunnel]:-}" ] && NOTE[stunnel]=$(stunnel_note)
if [ -n "${DPIDS[twoway]:-}" ]; then
  c=$(grep -m1 -oE 'cipher=[A-Z0-9_]+' "$T/twoway-server.log" | cut -d= -f2 || true)
  NOTE[twoway]=${NOTE[twoway]/@TWOWAY_CIPHER@/${c:-cipher ?}}
fi

# ---------------------------------------------------------------- aggregate: medians over the rounds
ROWS="$T/rows.tsv" SYSROWS="$T/sysrows.tsv"
: >"$ROWS"; : >"$SYSROWS"
col() { cut -f"$2" "$1" | median; }
pct() { col "$1" "$2" | awk '{ if ($1 ~ /^[0-9.]+$/) printf "%.0f", $1; else print $1 }'; }
for name in "${UP[@]}"; do
  g1=$(col "$T/$name.P1.tsv" 1); g8=$(col "$T/$name.P8.tsv" 1)
  d1=$(pct "$T/$name.P1.tsv" 2); b1=$(pct "$T/$name.P1.tsv" 3); s1=$(pct "$T/$name.P1.tsv" 4); r1=$(pct "$T/$name.P1.tsv" 5)
  d8=$(pct "$T/$name.P8.tsv" 2); b8=$(pct "$T/$name.P8.tsv" 3)
  cs=$(median <"$T/$name.conn")
  if [ -n "${DPIDS[$name]}" ]; then
    cpu="forwarder (both ends) ${d1}% / ${d8}% of a core; machine busy ${b1}% / ${b8}%"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$name" \
      "$(col "$T/$name.P1.sys.tsv" 4)" "$(col "$T/$name.P1.sys.tsv" 1)" "$(col "$T/$name.P1.sys.tsv" 2)" "$(col "$T/$name.P1.sys.tsv" 3)" \
      "$(col "$T/$name.P8.sys.tsv" 4)" "$(col "$T/$name.P8.sys.tsv" 1)" "$(col "$T/$name.P8.sys.tsv" 2)" "$(col "$T/$name.P8.sys.tsv" 3)" >>"$SYSROWS"
  else
    cpu="no forwarder; machine busy ${b1}% / ${b8}%; iperf3 snd/rcv ${s1}/${r1}% (1 stream)"
  fi
  printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$g1" "$g8" "$cs" "$cpu" "${NOTE[$name]}" >>"$ROWS"
done

# ---------------------------------------------------------------- report
{
  echo
  echo "Forwarding on loopback ($(date -Is); $(nproc) x$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); kernel $(uname -r))"
  echo "iperf3 TCP 127.0.0.1, ${SECS}s, median of $REPS interleaved runs; conn setup = median of $REPS runs of the median of $K"
  echo "(connect + 1-byte echo round trip + close, one at a time); CPU = utime+stime of the forwarder processes"
  echo "during the 1-stream / 8-stream runs, and whole-machine busy time. Load average before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -z "$WARN" ] || echo "$WARN"
  echo
  echo "| path | 1 stream Gbit/s | 8 streams Gbit/s | conn setup+RTT ms | CPU notes (1 / 8 streams) | notes |"
  echo "| --- | ---: | ---: | ---: | --- | --- |"
  awk -F'\t' '
    function g(x) { return (x ~ /^[0-9.]+$/) ? sprintf("%.2f", x) : x }
    function m(x) { return (x ~ /^[0-9.]+$/) ? sprintf("%.3f", x) : x }
    { printf "| %s | %s | %s | %s | %s | %s |\n", $1, g($2), g($3), m($4), $5, $6 }' "$ROWS"
  echo
  echo "Forwarder work per byte carried (both ends together; medians): CPU seconds per GB (utime+stime),"
  echo "read and write syscalls per MiB (/proc/PID/io syscr, syscw) and context switches per MiB"
  echo "(voluntary + involuntary, all threads). CPU s/GB is the figure least distorted by other load."
  echo
  echo "| path | 1 stream: CPU s/GB | reads/MiB | writes/MiB | ctx sw/MiB | 8 streams: CPU s/GB | reads/MiB | writes/MiB | ctx sw/MiB |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  awk -F'\t' 'function f(x) { return (x ~ /^[0-9.]+$/) ? sprintf("%.0f", x) : x }
    function c(x) { return (x ~ /^[0-9.]+$/) ? sprintf("%.2f", x) : x }
    { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, c($2), f($3), f($4), f($5), c($6), f($7), f($8), f($9) }' "$SYSROWS"
  echo
  echo "versions: $(go version | cut -d' ' -f3), $(iperf3 --version | head -1 | cut -d' ' -f1-2), $("$STUNNEL" -version 2>&1 | grep -m1 -E '^stunnel' | cut -d' ' -f1-2) / $("$STUNNEL" -version 2>&1 | grep -m1 'Compiled with' | sed 's/Compiled with //')"
} | tee "$T/table.md"

if [ "$GOBENCH" = 1 ]; then
  echo
  echo "Go benchmarks: go test -run X -bench . -benchtime $BENCHTIME ./tunnel/"
  (cd "$ROOT" && go test -run X -bench . -benchtime "$BENCHTIME" ./tunnel/ 2>&1) | grep -E '^(Benchmark|goos|goarch|cpu|pkg|ok|FAIL|---)' || true
fi
