# Shared by bench/vpn-loaded.sh, vpn-paired.sh and vpn-hops.sh (sourced, not run): brings up the anchor lab's
# three namespaces in a temp copy, measures one tunnel at a time through the route lab-client has to the
# corp LAN, and removes everything at exit.
#
# The caller sets NAME (for messages) and may set LAB_SRC, KEEP; then calls lab_start. After that:
#   with_wg FUNC ARGS...    brings wireguard-go up, runs FUNC wireguard-go ARGS..., brings it down
#   with_tw FUNC ARGS...    the same for twoway (bench/lab-twoway-vpn.sh, TW_* knobs apply; twoway is
#                           built once, by lab_start, from this checkout); FUNC's name is "twoway",
#                           or "twoway-tcp" with TW_TRANSPORT=tcp (the packets on the TLS connection)
#   with_raw FUNC ARGS...   the same for the raw routed path
#   pstats FILE             "avg p50 p90 p99" of the ping times in FILE (ms)
#   iperf_mbits FILE        received Mbit/s of an iperf3 -J result
#   peak_rss PATH           "GW/CLIENT" peak resident memory (VmHWM, MB) of the tunnel's two daemons
# $T is the temp dir (results go there; KEEP=1 keeps it).
#
# SAFETY: only the lab's 198.18.0.0/15 addresses, inside the lab's namespaces, which its netns-down.sh
# removes; nothing outside the temp dir is written.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_SRC=${LAB_SRC:-/work/shared/lab}
KEEP=${KEEP:-0}

die() { echo "$NAME: $*" >&2; exit 1; }

lab_start() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices): run it with sudo"
  [ -f "$LAB_SRC/common.sh" ] || die "no lab at $LAB_SRC (set LAB_SRC)"
  export PATH="/usr/local/go/bin:$PATH"
  local b
  for b in iperf3 wg jq ping bc; do command -v $b >/dev/null || die "$b missing: run sudo bench/vpn.sh once (it installs the lab's tools)"; done
  # Two benchmarks at once on 2 cores skew both (a zombie does not count).
  pgrep -r R,S,D -x iperf3 >/dev/null && die "another iperf3 is running: one benchmark at a time"
  T=$(mktemp -d "/tmp/twoway-$NAME.XXXXXX") || die "mktemp failed"
  cp -r "$LAB_SRC" "$T/lab" && chmod -R u+w "$T/lab" || die "copy $LAB_SRC failed"
  cd "$T/lab" || die "cd"
  . ./common.sh
  mkdir -p run results bin
  [ -x bin/wireguard ] || GOBIN="$LAB/bin" go install golang.zx2c4.com/wireguard@latest || die "wireguard-go build failed"
  [ -x bin/tcprr ] || (cd tcprr && go build -o ../bin/tcprr .) || die "tcprr build failed"
  certs/gen-certs.sh >/dev/null 2>&1
  export PATH="$LAB/bin:$PATH"
  # Built once: plugin_up would otherwise relink twoway right before every measurement.
  (cd "$REPO" && go build -o "$T/twoway" ./cmd/twoway) || die "twoway build failed"
  export TW_BIN="$T/twoway"
  trap lab_cleanup EXIT
  ./netns-up.sh >/dev/null 2>&1 || die "netns-up failed"
  start_corp_servers || die "corp servers did not start"
}

lab_cleanup() {
  stop_all_recorded 2>/dev/null
  ./netns-down.sh >/dev/null 2>&1
  cd /
  if [ "$KEEP" = 1 ]; then echo "$NAME: kept $T" >&2; else rm -rf "$T"; fi
}

pstats() {
  grep -o 'time=[0-9.]*' "$1" | cut -d= -f2 | sort -g |
    awk '{a[NR]=$1; s+=$1} END{ if (NR==0) {print "no replies"; exit}
      printf "%6.3f %6.3f %6.3f %6.3f", s/NR, a[int(NR*.5)+1], a[int(NR*.9)], a[int(NR*.99)] }'
}

peak_rss() {
  local gw=(-f "twoway server") cl=(-f "twoway client") p out=""
  [ "$1" = wireguard-go ] && gw=(-f "wireguard -f wgs") cl=(-f "wireguard -f wgc")
  for p in "$(pgrep "${gw[@]}" | head -1)" "$(pgrep "${cl[@]}" | head -1)"; do
    out+="$(awk '/^VmHWM/ { printf "%d", $2/1024 }' "/proc/$p/status" 2>/dev/null || echo -n '?')/"
  done
  echo "${out%/}"
}

iperf_mbits() { jq '.end.sum_received.bits_per_second/1e6|floor' "$1" 2>/dev/null; }

with_wg() {
  . wireguard/wg.sh
  if wg_up >/dev/null 2>&1; then "$1" wireguard-go "${@:2}"; else echo "wireguard-go did not come up" >&2; fi
  wg_down >/dev/null 2>&1
  client_route_none
}

with_tw() {
  ( . "$REPO/bench/lab-twoway-vpn.sh"
    local label=twoway
    [ "$TW_TRANSPORT" = tcp ] && label=twoway-tcp
    [ "${TW_PATHQ:-}" = off ] && label=$label-localq
    if plugin_up >/dev/null 2>&1; then "$1" "$label" "${@:2}"; else echo "twoway did not come up (see $RUN/twoway-vpn-*.log)" >&2; fi
    plugin_down >/dev/null 2>&1
    client_route_none )
}

with_raw() {
  client_route_raw
  "$1" raw "${@:2}"
  client_route_none
}
