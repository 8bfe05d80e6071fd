package tunnel

import (
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
)

// VPN mode: the gateway assigns each client that asks for it addresses
// from its pools (ipam), pushes them with routes, DNS and MTU in its hello,
// and the client opens one packets stream over which IP packets flow in
// both directions, length-prefixed and batched (see packets.go). At the
// gateway every packet goes through the router (anti-spoofing, policy per
// flow, client-to-client control, drop-not-block queues); the router's LAN
// is the gateway's TUN device.
//
// This file has what both sides share; the gateway's half is in
// vpn_gateway.go, the client's in vpn_client.go.

// capVPN is the hello capability for VPN mode: a client announces it to ask
// for a VPN configuration, a gateway to say it offers one.
const capVPN = "vpn"

// capGSO is the hello capability for GSO passthrough on the packets stream
// (tun.GSO): a client announces it when its device can read and write
// superpackets, the gateway when it agrees, which it does when its own
// device can and client-to-client traffic is off (a superpacket cannot go
// into another client's queue). When both announced it, every frame in both
// directions carries a GSO descriptor.
const capGSO = "gso"

// How often per-packet errors are logged at most.
const packetErrorLogEvery = 5 * time.Second

// VPNConfig is what the gateway pushes to a VPN client in its hello: the
// client applies it to its TUN device for the life of the session.
type VPNConfig struct {
	// Addresses are the client's own addresses with the pool's prefix
	// length (198.18.100.7/24), IPv4 first.
	Addresses []netip.Prefix `json:"addresses"`
	// Routes are sent into the tunnel; 0.0.0.0/0 and ::/0 make a full
	// tunnel (the client keeps its route to the gateway outside it).
	Routes []netip.Prefix `json:"routes,omitempty"`
	// DNS servers and search domains for the tunnel.
	DNS           []netip.Addr `json:"dns,omitempty"`
	SearchDomains []string     `json:"search_domains,omitempty"`
	// MTU for the client's TUN device.
	MTU int `json:"mtu"`
}

func (s *session) logPacketErr(dir string, err error) {
	if !isClosedErr(err) && !errors.Is(err, yamux.ErrTimeout) && !errors.Is(err, router.ErrPeerClosed) &&
		!errors.Is(err, tun.ErrClosed) && !isTimeout(err) {
		s.log.Warn("packets stream failed", "direction", dir, "err", err)
	}
}

// readTUN is the one reader loop of a TUN device, the gateway's (readLAN)
// and the client's (readDevice) alike: it reads batches sized by the
// device into buffers of tun.BufferSize allocated once, and hands each
// non-empty batch to deliver, packet i being
// bufs[i][tun.Offset:tun.Offset+sizes[i]]. When the device can keep
// superpackets whole and useGSO (nil: always) says so before a read, that
// read is one ReadGSO: one packet or superpacket, its GSO descriptor in
// front of tun.Offset, and gso is true. It returns when the device is
// closed; other read errors are logged, rate-limited, and reading goes on.
func readTUN(dev tun.Device, log *slog.Logger, useGSO func() bool, deliver func(bufs [][]byte, sizes []int, n int, gso bool)) {
	gdev, canGSO := tun.AsGSO(dev)
	batch := dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tun.BufferSize)
	}
	sizes := make([]int, batch)
	var lim ratelog.Limiter
	for {
		var n int
		var err error
		gso := canGSO && (useGSO == nil || useGSO())
		if gso {
			if sizes[0], err = gdev.ReadGSO(bufs[0], tun.Offset); err == nil {
				n = 1
			}
		} else {
			n, err = dev.Read(bufs, sizes, tun.Offset)
		}
		if n > 0 {
			deliver(bufs, sizes, n, gso)
		}
		if errors.Is(err, tun.ErrClosed) {
			return
		}
		if err != nil {
			// Per-batch trouble (ErrTooManySegments, a refused read):
			// IP loss is recovered end to end.
			if n, ok := lim.Allow(time.Now(), 1, packetErrorLogEvery); ok {
				log.Warn("reading the TUN device", "err", err, "suppressed", n)
			}
		}
	}
}
