#!/usr/bin/env bash
# Latency under load: ping through the tunnel while one iperf3 TCP stream fills it, for wireguard-go and
# twoway's VPN mode, in the anchor lab's three namespaces, in the same run. Idle ping (bench/vpn.sh)
# measures the path's own delay; this measures what a busy tunnel adds to everyone else's packets
# (bufferbloat): an SSH keystroke or a DNS lookup while a download runs.
#
#   sudo bench/vpn-loaded.sh                 # ROUNDS=2: wireguard-go, twoway, twoway, wireguard-go; ~3 min
#   sudo ROUNDS=1 bench/vpn-loaded.sh
#   sudo TW_BOTH=1 ROUNDS=1 bench/vpn-loaded.sh   # also twoway with its packets on the TLS connection
#   sudo TW_PATHQ_BOTH=1 ROUNDS=1 bench/vpn-loaded.sh   # also twoway with manage_path_queue = false
#   sudo REVERSE=1 bench/vpn-loaded.sh       # the stream downloads (corp -> client, iperf3 -R) instead
#
# Each measurement: 300 pings at 10 ms idle, then iperf3 -t IPERF_TIME (default 9) with 500 pings at
# 10 ms starting 2 s in. Prints avg/p50/p90/p99 of both, the iperf3 throughput and the peak resident
# memory of the gateway and client daemons (VmHWM, read before they stop). Rounds alternate the
# order so that drift on the machine does not land on one side. Environment: ROUNDS, IPERF_TIME,
# LAB_SRC (default /work/shared/lab), KEEP (1: keep the temp dir with the raw ping/iperf3 output),
# TW_* as for bench/lab-twoway-vpn.sh.
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces, which its netns-down.sh
# removes; nothing outside the temp dir is written.
set -uo pipefail

NAME=vpn-loaded.sh
. "$(dirname "$0")/lablib.sh"
ROUNDS=${ROUNDS:-2}
IPERF_TIME=${IPERF_TIME:-9}
REVERSE_FLAG=""; [ "${REVERSE:-0}" = 1 ] && REVERSE_FLAG=-R
lab_start

# measure NAME ROUND: the idle and loaded pings through whatever route lab-client has now.
measure() {
  local name=$1 r=$2 f="$T/$1.r$2"
  nsx $NS_C ping -n -c 300 -i 0.01 -W 1 $P_IP >"$f.idle" 2>&1
  nsx $NS_C iperf3 -c $P_IP -p $IPERF_PORT -t "$IPERF_TIME" ${REVERSE_FLAG:-} -J >"$f.iperf.json" 2>&1 &
  local ip=$!
  sleep 2
  nsx $NS_C ping -n -c 500 -i 0.01 -W 1 $P_IP >"$f.load" 2>&1
  wait $ip
  printf "%-14s %5s %8s   %s   %s   %s\n" "$name" "$r" "$(iperf_mbits "$f.iperf.json")" "$(pstats "$f.idle")" "$(pstats "$f.load")" "$(peak_rss "$name")"
}

echo "ping through the tunnel, idle and while one iperf3 stream runs (ms; ${IPERF_TIME}s iperf3${REVERSE_FLAG:+ -R, a download}, pings every 10 ms)"
printf "%-14s %5s %8s   %-27s   %-27s   %s\n" path round "Mbit/s" "idle: avg p50 p90 p99" "loaded: avg p50 p90 p99" "peak RSS MB gw/client"
# twoway's runs in a round: the UDP path (transport "auto"), and with TW_BOTH=1 the TLS path too.
tw_all() {
  with_tw measure "$1"
  if [ "${TW_PATHQ_BOTH:-0}" = 1 ]; then sleep 2; TW_PATHQ=off with_tw measure "$1"; fi
  if [ "${TW_BOTH:-0}" = 1 ]; then sleep 2; TW_TRANSPORT=tcp with_tw measure "$1"; fi
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then with_wg measure "$r"; sleep 2; tw_all "$r"; else tw_all "$r"; sleep 2; with_wg measure "$r"; fi
  sleep 2
done
