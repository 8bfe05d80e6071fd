#!/usr/bin/env bash
# VPN benchmark: twoway's VPN mode (TUN packets over one mutual-TLS session) in the anchor lab's three
# namespaces, beside the raw routed path and userspace wireguard-go, all measured in the same run.
# Copies the lab (read-only at LAB_SRC) to a temp dir, runs its run-all.sh with the
# bench/lab-twoway-vpn.sh plugin, prints the lab's final table and the comparison:
# twoway/wireguard-go 1-stream throughput ratio and twoway's RTT minus wireguard-go's.
#
#   sudo bench/vpn.sh                               # IPERF_TIME=10 IPERF_REPS=3: ~6 min
#   sudo IPERF_TIME=2 IPERF_REPS=1 bench/vpn.sh     # smoke, ~2.5 min
#   sudo TW_FORWARDING=nat bench/vpn.sh             # gateway masquerades instead of routing
#
# Environment: IPERF_TIME (iperf3 -t, default 10), IPERF_REPS (runs per series, median; default 3),
# PING_COUNT, RR_COUNT (the lab's defaults), LAB_SRC (default /work/shared/lab), OUT (where results are
# copied; default /tmp/twoway-vpn-results-STAMP), KEEP (1: keep the lab copy), WAIT_IPERF (1: first wait,
# up to 15 min, until no other iperf3 runs on the machine, so that two benchmarks never overlap; default 1),
# TW_FORWARDING, TW_MTU, TW_POOL, TW_GOMAXPROCS, TW_TRANSPORT (see bench/lab-twoway-vpn.sh), TW_BOTH (1: also
# measure twoway with transport = "tcp", bench/lab-twoway-vpn-tcp.sh, in the same run), TW_PATHQ_BOTH (1: also twoway with manage_path_queue = false,
# bench/lab-twoway-vpn-localq.sh), LAB_PATHS (the lab's paths
# measured before twoway, default "raw wg"; "" measures twoway alone, for quick experiments, with no
# comparison). See bench/README.md, "VPN".
#
# The target of the VPN issue: twoway 1-stream >= 1.5 x wireguard-go's, and added RTT no worse.
#
# SAFETY: the lab only uses 198.18.0.0/15 inside its own namespaces; every process is stopped by PID by
# the lab's netns-down.sh; nothing is written outside the temp dir and OUT.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
LAB_SRC=${LAB_SRC:-/work/shared/lab}
export IPERF_TIME=${IPERF_TIME:-10} IPERF_REPS=${IPERF_REPS:-3}
export PING_COUNT=${PING_COUNT:-200} RR_COUNT=${RR_COUNT:-5000}
export TW_FORWARDING=${TW_FORWARDING:-routed} TW_MTU=${TW_MTU:-} TW_POOL=${TW_POOL:-198.18.30.0/24} TW_GOMAXPROCS=${TW_GOMAXPROCS:-}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-/tmp/twoway-vpn-results-$STAMP}
KEEP=${KEEP:-0}
WAIT_IPERF=${WAIT_IPERF:-1}

die() { echo "vpn.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices): run it with sudo"
[ -f "$LAB_SRC/run-all.sh" ] || die "no lab at $LAB_SRC (set LAB_SRC)"
export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"

# The lab's preflight installs iperf3, wireguard-tools, openvpn, stunnel4, jq, iputils-ping, iproute2
# and go-installs wireguard-go when missing; ethtool (offload report) and bc (the ratio) are ours.
need=""
for b in ethtool:ethtool bc:bc; do command -v "${b%%:*}" >/dev/null || need="$need ${b#*:}"; done
if [ -n "$need" ]; then
  echo "vpn.sh: installing from apt:$need" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null ||
    die "apt-get install$need failed"
fi

# Another benchmark's iperf3 would skew both (2 cores): wait for it to finish.
if [ "$WAIT_IPERF" = 1 ]; then
  for i in $(seq 1 45); do
    pgrep -x iperf3 >/dev/null || break
    [ "$i" = 1 ] && echo "vpn.sh: another iperf3 is running; waiting (up to 15 min)" >&2
    sleep 20
  done
  pgrep -x iperf3 >/dev/null && die "another iperf3 still running after 15 min; not measuring"
fi

T=$(mktemp -d /tmp/twoway-vpn-lab.XXXXXX) || die "mktemp failed"
cleanup() { if [ "$KEEP" = 1 ]; then echo "vpn.sh: lab copy kept in $T/lab" >&2; else rm -rf "$T"; fi; }
trap cleanup EXIT
cp -r "$LAB_SRC" "$T/lab" && chmod -R u+w "$T/lab" || die "copy $LAB_SRC failed"

PLUGIN="$REPO/bench/lab-twoway-vpn.sh"
PLUGINS="plugin:$PLUGIN"
# TW_BOTH=1: twoway twice, transport "auto" (UDP) and "tcp" (the TLS connection), in the same run.
[ "${TW_BOTH:-0}" = 1 ] && PLUGINS="$PLUGINS plugin:$REPO/bench/lab-twoway-vpn-tcp.sh"
# TW_PATHQ_BOTH=1: also the UDP path with manage_path_queue = false, in the same run.
[ "${TW_PATHQ_BOTH:-0}" = 1 ] && PLUGINS="$PLUGINS plugin:$REPO/bench/lab-twoway-vpn-localq.sh"
(cd "$T/lab" && PATHS="${LAB_PATHS-raw wg} $PLUGINS" ./run-all.sh) >"$T/run-all.out"
rc=$?
mkdir -p "$OUT"
cp -r "$T/lab/results/." "$OUT/" 2>/dev/null
mkdir -p "$OUT/run" && cp "$T/lab/run/"*.log "$T/lab/run/"*.toml "$T/lab/run/"*.json "$OUT/run/" 2>/dev/null
[ $rc = 0 ] || echo "vpn.sh: run-all.sh exited $rc" >&2

S="$T/lab/results/summary.tsv"
[ -s "$S" ] || die "no summary from the lab (results in $OUT)"
# Print the lab's final table as the lab printed it (it is also in $OUT/final-table.txt).
cat "$T/run-all.out"

# summary.tsv columns: 1 name | 2 P1 median | 10 P4 median | 18 ping avg | 20 ping p99 | 22 tcp-rr avg | 24 tcp-rr p99
col() { awk -F'\t' -v n="$1" -v c="$2" '$1==n && $2!="FAILED" {print $c}' "$S"; }
fmt() { awk -v x="$1" 'BEGIN{ if (x=="" || x=="nan") print "n/a"; else printf "%.3f", x }'; }
diff3() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a==""||b==""||a=="nan"||b=="nan") print "n/a"; else printf "%+.3f", a-b }'; }

tw1=$(col twoway-vpn 2) wg1=$(col wireguard-go 2) raw1=$(col raw 2)
tw4=$(col twoway-vpn 10) wg4=$(col wireguard-go 10)
twp=$(col twoway-vpn 18) wgp=$(col wireguard-go 18) rawp=$(col raw 18)
twp99=$(col twoway-vpn 20) wgp99=$(col wireguard-go 20)
twr=$(col twoway-vpn 22) wgr=$(col wireguard-go 22) rawr=$(col raw 22)

{
echo
echo "twoway VPN vs wireguard-go, same run (${IPERF_TIME}s x ${IPERF_REPS} reps, medians; forwarding ${TW_FORWARDING}):"
if [ -n "$tw1" ] && [ -n "$wg1" ]; then
  ratio=$(awk -v a="$tw1" -v b="$wg1" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')
  ratio4=$(awk -v a="$tw4" -v b="$wg4" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')
  printf "  TCP 1 stream:  twoway %.0f Mbit/s, wireguard-go %.0f, raw %.0f  -> twoway/wireguard-go = %sx (target >= 1.5x: %s)\n" \
    "$tw1" "$wg1" "${raw1:-0}" "$ratio" "$(awk -v r="$ratio" 'BEGIN{ print (r+0 >= 1.5) ? "met" : "MISSED" }')"
  printf "  TCP 4 streams: twoway %.0f Mbit/s, wireguard-go %.0f  -> %sx\n" "${tw4:-0}" "${wg4:-0}" "$ratio4"
  addtw=$(diff3 "$twp" "$rawp") addwg=$(diff3 "$wgp" "$rawp")
  printf "  ping avg: twoway %s ms, wireguard-go %s ms, raw %s ms  -> twoway - wireguard-go = %s ms; added over raw: twoway %s, wireguard-go %s (target: twoway's added <= wireguard-go's: %s)\n" \
    "$(fmt "$twp")" "$(fmt "$wgp")" "$(fmt "$rawp")" "$(diff3 "$twp" "$wgp")" "$addtw" "$addwg" \
    "$(awk -v a="$twp" -v b="$wgp" 'BEGIN{ if (a==""||b=="") print "n/a"; else print (a+0 <= b+0) ? "met" : "MISSED" }')"
  printf "  ping p99: twoway %s ms, wireguard-go %s ms  -> %s ms\n" "$(fmt "$twp99")" "$(fmt "$wgp99")" "$(diff3 "$twp99" "$wgp99")"
  printf "  tcp-rr avg: twoway %s ms, wireguard-go %s ms, raw %s ms  -> twoway - wireguard-go = %s ms\n" \
    "$(fmt "$twr")" "$(fmt "$wgr")" "$(fmt "$rawr")" "$(diff3 "$twr" "$wgr")"
else
  echo "  twoway-vpn or wireguard-go row missing or FAILED: see $OUT/run-log.txt and $OUT/run/*.log"
fi
tt1=$(col twoway-vpn-tcp 2) tt4=$(col twoway-vpn-tcp 10) ttp=$(col twoway-vpn-tcp 18) ttp99=$(col twoway-vpn-tcp 20)
if [ -n "$tt1" ]; then
  printf "  transport tcp (same run): TCP 1 stream %.0f Mbit/s, 4 streams %.0f; ping avg %s ms, p99 %s ms\n" \
    "$tt1" "${tt4:-0}" "$(fmt "$ttp")" "$(fmt "$ttp99")"
fi
echo "results: $OUT"
} | tee "$OUT/comparison.txt"
exit $rc
