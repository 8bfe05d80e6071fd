#!/usr/bin/env bash
# A forward's request/response latency beside stunnel, round by round (issue 14's last target: the
# lab's tcp-rr through a -L forward no worse than stunnel's). Each round is one run of the anchor
# lab's run-all.sh (clean link) in a fresh temp copy with stunnel and twoway's forward plugin
# (bench/lab-twoway-fwd.sh), the order alternating, so that the machine's drift lands on both; with
# BEFORE=REV a build of that commit is measured in the same rounds as "twoway-before".
#
#   sudo bench/fwd-rr-paired.sh                       # ROUNDS=4 IPERF_TIME=3: ~2 min a round
#   sudo BEFORE=5b36240 ROUNDS=4 bench/fwd-rr-paired.sh   # also the build of 5b36240
#
# Prints each round's tcp-rr avg (p99) in ms (5000 x 64-byte ping-pongs on one connection) and
# one-stream iperf3 Mbit/s, then the median over the rounds of twoway's tcp-rr minus stunnel's and
# in how many rounds twoway's was no higher. Environment: ROUNDS, IPERF_TIME, LAB_SRC (default
# /work/shared/lab), BEFORE, KEEP (1: keep the temp dir with each round's lab results).
#
# SAFETY: only the lab's 198.18.0.0/15 addresses and 127.0.0.1, inside the lab's namespaces.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
LAB_SRC=${LAB_SRC:-/work/shared/lab}
ROUNDS=${ROUNDS:-4}
IPERF_TIME=${IPERF_TIME:-3}
BEFORE=${BEFORE:-}
die() { echo "fwd-rr-paired.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces): run it with sudo"
[ -f "$LAB_SRC/run-all.sh" ] || die "no lab at $LAB_SRC (set LAB_SRC)"
T=$(mktemp -d /tmp/fwd-rr-paired.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$T"' EXIT

plugins=("plugin:$REPO/bench/lab-twoway-fwd.sh")
if [ -n "$BEFORE" ]; then
  git -C "$REPO" worktree add --detach -f "$T/before" "$BEFORE" >/dev/null 2>&1 || die "cannot check out $BEFORE"
  trap 'git -C "$REPO" worktree remove --force "$T/before" 2>/dev/null; [ "${KEEP:-0}" = 1 ] || rm -rf "$T"' EXIT
  # The same plugin, built from the old commit, under another name and other ports.
  sed -e 's/^PLUGIN_NAME=twoway-fwd$/PLUGIN_NAME=twoway-before/' -e 's/^PLUGIN_PORT=25201$/PLUGIN_PORT=25301/' \
    -e 's/^PLUGIN_RR_PORT=27000$/PLUGIN_RR_PORT=27100/' -e 's/^TWOWAY_GW_PORT=9443$/TWOWAY_GW_PORT=9543/' \
    -e "s|^TWOWAY_SRC=.*|TWOWAY_SRC=$T/before|" "$REPO/bench/lab-twoway-fwd.sh" >"$T/plugin-before.sh"
  plugins+=("plugin:$T/plugin-before.sh")
fi

# row TABLE NAME: "avg p99 mbits" of that path in a run-all.sh final table
row() {
  awk -F'|' -v n="$2" '{ p=$2; gsub(/ /, "", p) } p == n {
    rr=$6; gsub(/^ +| +$/, "", rr); split(rr, a, /[ ()]+/); m=$3; sub(/^ +/, "", m); split(m, b, / /)
    print a[1], a[2], b[1] }' "$1"
}

: >"$T/rows"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then paths="stunnel ${plugins[*]}"; else paths="${plugins[*]} stunnel"; fi
  rm -rf "$T/lab" && cp -r "$LAB_SRC" "$T/lab" && chmod -R u+w "$T/lab"
  echo "round $r: $paths" >&2
  (cd "$T/lab" && IPERF_TIME=$IPERF_TIME IPERF_REPS=1 PATHS="$paths" ./run-all.sh >"$T/round$r.log" 2>&1) ||
    die "round $r failed (see $T/round$r.log; KEEP=1 keeps it)"
  tab="$T/lab/results/final-table.txt"
  cp "$tab" "$T/round$r.txt"
  for p in stunnel-mtls-fwd twoway-fwd twoway-before; do
    v=$(row "$tab" $p); [ -n "$v" ] && echo "$r $p $v" >>"$T/rows"
  done
done

echo
printf '%-6s %-18s %-18s %-18s\n' round "stunnel rr (p99)" "twoway rr (p99)" "${BEFORE:+before rr (p99)}"
for r in $(seq 1 "$ROUNDS"); do
  get() { awk -v r="$r" -v p="$1" '$1==r && $2==p { printf "%s (%s) %s", $3, $4, $5 }' "$T/rows"; }
  printf '%-6s %-18s %-18s %-18s\n' "$r" "$(get stunnel-mtls-fwd | cut -d' ' -f1-2)" \
    "$(get twoway-fwd | cut -d' ' -f1-2)" "$(get twoway-before | cut -d' ' -f1-2)"
done
# per-round differences, sorted, then their median (mawk has no asort)
awk '$2=="stunnel-mtls-fwd" { s[$1]=$3 } $2=="twoway-fwd" { t[$1]=$3 }
  END { for (r in s) if (r in t) print t[r]-s[r] }' "$T/rows" | sort -g >"$T/diffs"
awk '{ d[NR]=$1; if ($1 <= 0) ok++ }
  END { if (NR == 0) { print "\nno round measured both"; exit }
    med = (NR % 2) ? d[(NR+1)/2] : (d[NR/2] + d[NR/2+1]) / 2
    printf "\ntwoway minus stunnel, tcp-rr avg: median %+.3f ms over %d rounds; twoway no higher in %d\n", med, NR, ok+0 }' "$T/diffs"
echo "one-stream Mbit/s, per round (stunnel / twoway${BEFORE:+ / before}):"
for r in $(seq 1 "$ROUNDS"); do
  awk -v r="$r" '$1==r { m[$2]=$5 } END { printf "  %s: %s / %s%s\n", r, m["stunnel-mtls-fwd"], m["twoway-fwd"], ("twoway-before" in m) ? " / " m["twoway-before"] : "" }' "$T/rows"
done
