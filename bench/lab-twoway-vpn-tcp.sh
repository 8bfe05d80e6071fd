# twoway VPN-mode plugin for the anchor lab with the client's transport = "tcp": the packets stay on the
# TLS connection (the packets stream), so the UDP path (bench/lab-twoway-vpn.sh, transport "auto") and
# the TCP path are measured in the same run: PATHS="raw wg plugin:.../lab-twoway-vpn.sh
# plugin:.../lab-twoway-vpn-tcp.sh" (bench/vpn.sh does this with TW_BOTH=1). See lab-twoway-vpn.sh.
TW_TRANSPORT=tcp
TW_PLUGIN_NAME=twoway-vpn-tcp
. "$(dirname "${BASH_SOURCE[0]}")/lab-twoway-vpn.sh"
