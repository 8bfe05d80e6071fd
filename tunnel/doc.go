// Package tunnel is twoway's transport: one mutually authenticated TLS 1.3
// connection per client, multiplexed with yamux into a control stream and
// any number of data streams that carry forwarded TCP connections.
//
// A Server (the gateway) verifies each client's certificate chain with a
// pki.Verifier, asks a Policy whether the identity may connect, and then
// dials targets (-L, -D) and listens (-R) on the client's behalf, asking the
// Policy each time. A Client keeps a session to the first reachable gateway
// endpoint, reconnects with backoff, and serves local forwards across
// reconnects. The wire protocol is described in docs/PROTOCOL.md.
//
// In VPN mode (ServerVPN, ClientVPN) the gateway also leases
// the client addresses and pushes them with routes, DNS and MTU in its
// hello, and the client carries its TUN device's packets over one packets
// stream, in batches, through the gateway's router (package router). The
// package sees only the tun.Device interface: the daemon opens real
// devices, tests use tun/tuntest.
//
// Both follow the usual lifecycle: New (validates, touches nothing),
// Start (listens, returns at once), Stop (drains, idempotent) and Wait.
//
// # Layout
//
// Files are split by side (gateway, client) and, within a side, by the
// path a connection or packet takes:
//
//   - server.go, client.go: configuration and lifecycle of each side; the
//     gateway's accept loop, handshake and hello; the client's reconnect
//     loop and hello.
//   - admission.go: who may hold a session: the gateway's limits (admit),
//     refusals and their log, Revalidate after a reload, Kick.
//   - forward_gateway.go, forward_client.go: the port forwards (-L, -D,
//     -R) at each side; forward.go: the Forward type both share.
//   - vpn_gateway.go, vpn_client.go: VPN mode at each side, in the order
//     a packet meets the functions; vpn.go: what both share, among it the
//     one TUN reader loop; packets.go: the packets stream's framing.
//   - session.go: what both sides' sessions share (control stream,
//     stream accounting, proxying, drain); wire.go: stream headers,
//     replies and control messages; errors.go: every sentinel error and
//     the table from wire codes to them.
//   - muxconn.go, cork.go, guard.go, budget.go, gate.go, limits.go: what
//     yamux runs over and how a hostile peer is bounded; tlsconf.go: the
//     TLS configurations; tuning.go: Tuning.
//   - policy.go: the Policy interface; local.go: the gateway's own
//     addresses; stats.go: counters; release.go: giving memory back after
//     many sessions end.
package tunnel
