#!/usr/bin/env bash
# Latency under load: ping through the tunnel while one iperf3 TCP stream fills it, for wireguard-go and
# twoway's VPN mode, in the anchor lab's three namespaces, in the same run. Idle ping (bench/vpn.sh)
# measures the path's own delay; this measures what a busy tunnel adds to everyone else's packets
# (bufferbloat): an SSH keystroke or a DNS lookup while a download runs.
#
#   sudo bench/vpn-loaded.sh                 # ROUNDS=2: wireguard-go, twoway, twoway, wireguard-go; ~3 min
#   sudo ROUNDS=1 bench/vpn-loaded.sh
#
# Each measurement: 300 pings at 10 ms idle, then iperf3 -t IPERF_TIME (default 9) with 500 pings at
# 10 ms starting 2 s in. Prints avg/p50/p90/p99 of both and the iperf3 throughput. Rounds alternate the
# order so that drift on the machine does not land on one side. Environment: ROUNDS, IPERF_TIME,
# LAB_SRC (default /work/shared/lab), KEEP (1: keep the temp dir with the raw ping/iperf3 output),
# TW_* as for bench/lab-twoway-vpn.sh.
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces, which its netns-down.sh
# removes; nothing outside the temp dir is written.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
LAB_SRC=${LAB_SRC:-/work/shared/lab}
ROUNDS=${ROUNDS:-2}
IPERF_TIME=${IPERF_TIME:-9}
KEEP=${KEEP:-0}

die() { echo "vpn-loaded.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices): run it with sudo"
[ -f "$LAB_SRC/common.sh" ] || die "no lab at $LAB_SRC (set LAB_SRC)"
export PATH="/usr/local/go/bin:$PATH"
for b in iperf3 wg jq ping; do command -v $b >/dev/null || die "$b missing: run sudo bench/vpn.sh once (the lab installs it)"; done

T=$(mktemp -d /tmp/twoway-vpn-loaded.XXXXXX) || die "mktemp failed"
cp -r "$LAB_SRC" "$T/lab" && chmod -R u+w "$T/lab" || die "copy $LAB_SRC failed"
cd "$T/lab" || die "cd"
. ./common.sh
mkdir -p run results bin
[ -x bin/wireguard ] || GOBIN="$LAB/bin" go install golang.zx2c4.com/wireguard@latest || die "wireguard-go build failed"
[ -x bin/tcprr ] || (cd tcprr && go build -o ../bin/tcprr .) || die "tcprr build failed"
certs/gen-certs.sh >/dev/null 2>&1
export PATH="$LAB/bin:$PATH"
cleanup() {
  stop_all_recorded 2>/dev/null
  ./netns-down.sh >/dev/null 2>&1
  cd /
  if [ "$KEEP" = 1 ]; then echo "vpn-loaded.sh: kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
./netns-up.sh >/dev/null 2>&1 || die "netns-up failed"
start_corp_servers || die "corp servers did not start"

# stats FILE: avg p50 p90 p99 of the ping times in FILE, in ms.
stats() {
  grep -o 'time=[0-9.]*' "$1" | cut -d= -f2 | sort -g |
    awk '{a[NR]=$1; s+=$1} END{ if (NR==0) {print "no replies"; exit}
      printf "%6.3f %6.3f %6.3f %6.3f", s/NR, a[int(NR*.5)+1], a[int(NR*.9)], a[int(NR*.99)] }'
}

# measure NAME ROUND: the idle and loaded pings through whatever route lab-client has now.
measure() {
  local name=$1 r=$2 f="$T/$1.r$2"
  nsx $NS_C ping -n -c 300 -i 0.01 -W 1 $P_IP >"$f.idle" 2>&1
  nsx $NS_C iperf3 -c $P_IP -p $IPERF_PORT -t "$IPERF_TIME" -J >"$f.iperf.json" 2>&1 &
  local ip=$!
  sleep 2
  nsx $NS_C ping -n -c 500 -i 0.01 -W 1 $P_IP >"$f.load" 2>&1
  wait $ip
  local bw
  bw=$(jq '.end.sum_received.bits_per_second/1e6|floor' "$f.iperf.json" 2>/dev/null)
  printf "%-14s %5s %8s   %s   %s\n" "$name" "$r" "${bw:-?}" "$(stats "$f.idle")" "$(stats "$f.load")"
}

run_wg() {
  . wireguard/wg.sh
  if wg_up >/dev/null 2>&1; then measure wireguard-go "$1"; else echo "wireguard-go did not come up" >&2; fi
  wg_down >/dev/null 2>&1
  client_route_none
}

run_tw() {
  ( . "$REPO/bench/lab-twoway-vpn.sh"
    if plugin_up >/dev/null 2>&1; then measure twoway "$1"; else echo "twoway did not come up (see $RUN/twoway-vpn-*.log)" >&2; fi
    plugin_down
    client_route_none )
}

echo "ping through the tunnel, idle and while one iperf3 stream runs (ms; ${IPERF_TIME}s iperf3, pings every 10 ms)"
printf "%-14s %5s %8s   %-27s   %s\n" path round "Mbit/s" "idle: avg p50 p90 p99" "loaded: avg p50 p90 p99"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_wg "$r"; sleep 2; run_tw "$r"; else run_tw "$r"; sleep 2; run_wg "$r"; fi
  sleep 2
done
