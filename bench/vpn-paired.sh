#!/usr/bin/env bash
# Paired VPN benchmark: wireguard-go and twoway's VPN mode measured in alternation, round by round, in
# the anchor lab's three namespaces, so that the machine's drift (on a shared 2-core VM, raw routing
# alone moved from 16 to 11 Gbit/s within one afternoon) lands on both tunnels alike. bench/vpn.sh runs
# the lab's run-all.sh, which measures one path completely (3 x 10 s) before the next; here every round
# measures both, the order alternating, and the verdict is taken over the per-round ratios.
#
#   sudo bench/vpn-paired.sh                      # ROUNDS=6 IPERF_TIME=10 PING_COUNT=500: ~6 min
#   sudo ROUNDS=2 IPERF_TIME=3 bench/vpn-paired.sh   # smoke, ~1.5 min
#
# Each round: 500 idle pings (10 ms apart) over the raw routed path; then for wireguard-go and twoway
# (odd rounds wireguard-go first, even rounds twoway first): bring the tunnel up, PING_COUNT idle pings,
# one iperf3 TCP stream for IPERF_TIME s, bring it down. Prints one line per round and the verdict on
# the VPN issue's targets: twoway's 1-stream throughput >= 1.5 x wireguard-go's (median of the per-round
# ratios, and in how many rounds), and twoway's added round-trip time no worse than wireguard-go's (the
# median of the per-round differences of the average pings, like the ratios; the raw path's delay is in
# both and cancels; the mean over all pings is printed beside it, one noisy round can sway that).
#
# Environment: ROUNDS, IPERF_TIME, PING_COUNT, LAB_SRC (default /work/shared/lab), KEEP (1: keep the
# temp dir with every ping and iperf3 output), TW_* as for bench/lab-twoway-vpn.sh. Run bench/vpn.sh
# once first on a fresh machine: the lab's preflight installs iperf3, wireguard-tools and jq.
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces (see bench/lablib.sh).
set -uo pipefail

NAME=vpn-paired.sh
. "$(dirname "$0")/lablib.sh"
ROUNDS=${ROUNDS:-6}
IPERF_TIME=${IPERF_TIME:-10}
PING_COUNT=${PING_COUNT:-500}
lab_start

# measure PATH ROUND [noiperf]: idle pings, then (unless noiperf) one iperf3 stream; appends
# "round path mbits avg p50 p90 p99" to $T/rows.
measure() {
  local path=$1 r=$2 f="$T/$1.r$2" mb=-
  sleep 2 # let the daemons that just started settle
  nsx $NS_C ping -n -c "$PING_COUNT" -i 0.01 -W 1 $P_IP >"$f.ping" 2>&1
  if [ "${3:-}" != noiperf ]; then
    nsx $NS_C iperf3 -c $P_IP -p $IPERF_PORT -t "$IPERF_TIME" -J >"$f.iperf.json" 2>&1
    mb=$(iperf_mbits "$f.iperf.json")
  fi
  echo "$r $path ${mb:--} $(pstats "$f.ping")" >>"$T/rows"
}

: >"$T/rows"
echo "$NAME: $ROUNDS rounds; per path and round $PING_COUNT idle pings at 10 ms, then iperf3 -t $IPERF_TIME (1 stream)" >&2
for r in $(seq 1 "$ROUNDS"); do
  with_raw measure "$r" noiperf
  if [ $((r % 2)) = 1 ]; then with_wg measure "$r"; with_tw measure "$r"; else with_tw measure "$r"; with_wg measure "$r"; fi
  grep "^$r " "$T/rows" | sed 's/^/  /' >&2
done

# rows: round path mbits avg p50 p90 p99
awk -v rounds="$ROUNDS" '
  { mb[$1,$2]=$3; avg[$1,$2]=$4; p50[$1,$2]=$5; p99[$1,$2]=$7 }
  function med(a, n,   i, j, t) { for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (a[j]<a[i]) {t=a[i];a[i]=a[j];a[j]=t}
    return n%2 ? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2 }
  END {
    printf "| round | wireguard-go Mbit/s | twoway Mbit/s | ratio | ping avg raw / wireguard-go / twoway ms | twoway - wireguard-go ms |\n"
    printf "| ---: | ---: | ---: | ---: | --- | ---: |\n"
    n=0; met=0
    for (r=1; r<=rounds; r++) {
      w=mb[r,"wireguard-go"]; t=mb[r,"twoway"]
      if (w=="" || t=="" || w=="-" || t=="-" || w+0==0) { printf "| %d | %s | %s | n/a | | |\n", r, w, t; continue }
      n++; ratio[n]=t/w; if (t/w >= 1.5) met++
      sraw+=avg[r,"raw"]; swg+=avg[r,"wireguard-go"]; stw+=avg[r,"twoway"]
      m50wg[n]=p50[r,"wireguard-go"]; m50tw[n]=p50[r,"twoway"]; m50raw[n]=p50[r,"raw"]
      dpair[n]=avg[r,"twoway"]-avg[r,"wireguard-go"]; if (dpair[n] <= 0) better++
      printf "| %d | %d | %d | %.2f | %.3f / %.3f / %.3f | %+.3f |\n", r, w, t, t/w, avg[r,"raw"], avg[r,"wireguard-go"], avg[r,"twoway"], avg[r,"twoway"]-avg[r,"wireguard-go"]
    }
    if (n == 0) { print "no complete round"; exit 1 }
    mr=med(ratio, n)
    printf "\nthroughput, 1 stream: median twoway/wireguard-go ratio %.2f over %d rounds (target >= 1.5: %s); >= 1.5 in %d of %d rounds\n", mr, n, (mr >= 1.5 ? "met" : "MISSED"), met, n
    araw=sraw/n; awg=swg/n; atw=stw/n
    md=med(dpair, n)
    printf "added round-trip time: median of the per-round differences twoway - wireguard-go %+.3f ms (target <= 0: %s); twoway as fast or faster in %d of %d rounds\n", md, (md <= 0 ? "met" : "MISSED"), better, n
    printf "  mean over all pings, minus raw %.3f ms: wireguard-go %+.3f ms, twoway %+.3f ms (%s)\n", araw, awg-araw, atw-araw, (atw <= awg ? "twoway <= wireguard-go" : "twoway > wireguard-go")
    printf "median of the per-round ping medians: raw %.3f, wireguard-go %.3f, twoway %.3f ms\n", med(m50raw, n), med(m50wg, n), med(m50tw, n)
  }' "$T/rows"
