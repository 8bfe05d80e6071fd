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
// In VPN mode (ServerVPN, ClientVPN; see vpn.go) the gateway also leases
// the client addresses and pushes them with routes, DNS and MTU in its
// hello, and the client carries its TUN device's packets over one packets
// stream, in batches, through the gateway's router (package router). The
// package sees only the tun.Device interface: the daemon opens real
// devices, tests use tun/tuntest.
//
// Both follow the usual lifecycle: New (validates, touches nothing),
// Start (listens, returns at once), Stop (drains, idempotent) and Wait.
package tunnel
