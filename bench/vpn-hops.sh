#!/usr/bin/env bash
# Where an idle ping's round trip goes, hop by hop, through wireguard-go and through twoway's VPN mode,
# in the anchor lab's three namespaces. tcpdump listens on four interfaces at once: the client's tunnel
# device (the inner packet as the client's kernel hands it over, and the reply as the tunnel delivers
# it), the client's and the gateway's ends of the client-gateway link (the outer packets), and the
# gateway's LAN interface (the inner packet on its way to the corp host and back). Each echo request is
# matched with the first outer packet after it in each direction, which on an otherwise idle tunnel is
# the one that carries it. The hops, per ping:
#
#   client send   tunnel device -> client's outer packet on the wire   (wakeup, read, encrypt, send)
#   wire c>g      client's end of the link -> gateway's end            (kernel: veth, outer TCP or UDP)
#   gw recv       gateway's end -> the inner packet on the LAN         (wakeup, decrypt, route, TUN write)
#   corp          the LAN interface out -> the echo reply back in      (the corp host's kernel)
#   gw send       the reply on the LAN -> the gateway's outer packet   (TUN read, route, encrypt, send)
#   wire g>c      gateway's end -> client's end
#   client recv   client's end -> the reply on the tunnel device       (wakeup, decrypt, TUN write)
#
#   sudo bench/vpn-hops.sh                 # ROUNDS=2 PING_COUNT=1000: wireguard-go, twoway, twoway, wireguard-go; ~2 min
#
# Prints mean, p50, p90 and p99 (microseconds) per hop, per tunnel and round. Environment: ROUNDS,
# PING_COUNT, KEEP (1: keep the captures), LAB_SRC, TW_* (bench/lab-twoway-vpn.sh). Needs tcpdump and
# python3 (installed with apt-get when missing).
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces (see bench/lablib.sh).
set -uo pipefail

NAME=vpn-hops.sh
. "$(dirname "$0")/lablib.sh"
ROUNDS=${ROUNDS:-2}
PING_COUNT=${PING_COUNT:-1000}
HOPS_PY="$REPO/bench/hops.py"
lab_start # checks for root first
for b in tcpdump:tcpdump python3:python3; do
  command -v "${b%%:*}" >/dev/null && continue
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${b#*:}" >/dev/null ||
    die "apt-get install ${b#*:} failed"
done

# hops PATH ROUND TUNDEV: capture, ping, analyse.
hops() {
  local path=$1 r=$2 dev=$3 f="$T/$1.r$2" pids=() x
  pids+=("$(start_bg $NS_C "$f.cin.log" tcpdump -i "$dev" -n -s 96 -w "$f.cin.pcap")")
  pids+=("$(start_bg $NS_C "$f.cout.log" tcpdump -i $C_IF -n -s 96 -w "$f.cout.pcap")")
  pids+=("$(start_bg $NS_G "$f.gout.log" tcpdump -i $G_IF -n -s 96 -w "$f.gout.pcap")")
  pids+=("$(start_bg $NS_G "$f.glan.log" tcpdump -i $GL_IF -n -s 96 -w "$f.glan.pcap")")
  sleep 2 # tcpdump up, daemons settled
  nsx $NS_C ping -n -c "$PING_COUNT" -i 0.01 -W 1 $P_IP >"$f.ping" 2>&1
  sleep 1
  stop_pid "${pids[@]}"
  for x in cin cout gout glan; do tcpdump -r "$f.$x.pcap" -tt -n >"$f.$x.txt" 2>/dev/null; done
  python3 "$HOPS_PY" --client "$C_IP" --gateway "$G_IP" --title "$path, round $r" "$f"
}
hops_wg() { hops "$1" "$2" wgc; }
hops_tw() { hops "$1" "$2" "$TW_C_TUN"; }

for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then with_wg hops_wg "$r"; with_tw hops_tw "$r"; else with_tw hops_tw "$r"; with_wg hops_wg "$r"; fi
done
