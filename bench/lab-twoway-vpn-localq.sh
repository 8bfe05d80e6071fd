# twoway VPN-mode plugin for the anchor lab with manage_path_queue = false on both ends: the UDP path
# with CoDel judging only the tunnel's own queues, to measure what managing the path's queue changes in
# the same run: PATHS="raw wg plugin:.../lab-twoway-vpn.sh plugin:.../lab-twoway-vpn-localq.sh"
# (bench/vpn.sh does this with TW_PATHQ_BOTH=1). See lab-twoway-vpn.sh.
TW_PATHQ=off
TW_PLUGIN_NAME=twoway-vpn-localq
. "$(dirname "${BASH_SOURCE[0]}")/lab-twoway-vpn.sh"
