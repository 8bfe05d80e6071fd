package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
)

// The gateway's half of VPN mode (vpn.go has what both halves share).
// The functions below appear in the order a session and its packets meet
// them, as in wireguard-go's device/send.go: the configuration and the
// router, set up by NewServer; the lease, taken in the hello; the packets
// stream, on which a client's packets go into the router and out to the
// LAN while the router's queue for the client goes back to it; the LAN
// reader, where packets for clients enter the router; then the end of a
// session's VPN (closePackets, releaseVPN) and the router's counters.

// ServerVPN turns on VPN mode at the gateway.
type ServerVPN struct {
	// Device is the gateway's TUN device, configured with the gateway's
	// pool addresses (Pool.Gateway()); it is the router's LAN side. The
	// server reads it from Start on and closes it on Stop.
	Device tun.Device
	// Pool assigns client addresses.
	Pool *ipam.Pool
	// Routes, DNS, SearchDomains and MTU are pushed to clients as they
	// are; MTU 0 pushes the device's MTU.
	Routes        []netip.Prefix
	DNS           []netip.Addr
	SearchDomains []string
	MTU           int
	// ClientToClient lets clients reach each other's addresses.
	ClientToClient bool
	// QueueLen is each client's outbound queue in packets (router
	// default 1024); a full queue drops.
	QueueLen int
	// UDP, if set, offers clients the UDP data path (udp_gateway.go).
	UDP *ServerUDP
}

func (v *ServerVPN) validate() error {
	if v.Device == nil {
		return errors.New("server: vpn: no TUN device")
	}
	if v.Pool == nil {
		return errors.New("server: vpn: no address pool")
	}
	if v.MTU != 0 && (v.MTU < tun.MinMTU || v.MTU > tun.MaxMTU) {
		return fmt.Errorf("server: vpn: mtu %d outside %d..%d", v.MTU, tun.MinMTU, tun.MaxMTU)
	}
	return nil
}

// newRouter builds the gateway's packet router over the VPN device.
func (s *Server) newRouter() error {
	v := s.cfg.VPN
	if v.MTU == 0 {
		mtu, err := v.Device.MTU()
		if err != nil {
			return fmt.Errorf("server: vpn: device mtu: %w", err)
		}
		v.MTU = mtu
	}
	_, lanGSO := tun.AsGSO(v.Device)
	r, err := router.New(router.Config{
		LAN: v.Device, Policy: s.cfg.Policy, ClientToClient: v.ClientToClient, QueueLen: v.QueueLen,
		LANGSO: lanGSO,
	}, s.log.With("component", "router"))
	if err != nil {
		return fmt.Errorf("server: vpn: %w", err)
	}
	s.router = r
	return nil
}

// gsoOK reports whether the gateway can take superpackets from clients.
func (s *Server) gsoOK() bool {
	v := s.cfg.VPN
	_, ok := tun.AsGSO(v.Device)
	return ok && !v.ClientToClient
}

// acquireVPN leases addresses for a session whose client asked for VPN
// mode and returns the configuration to push, or why there is none.
func (ss *serverSession) acquireVPN() (*VPNConfig, string) {
	s := ss.srv
	if s.router == nil || !ss.peerCaps[capVPN] {
		return nil, ""
	}
	// By Key, not Name: a sub-CA's "alice" is not the client CA's.
	lease, err := s.cfg.VPN.Pool.Acquire(ss.peer.Key(), ss.peer.Groups)
	if err != nil {
		ss.log.Warn("no VPN address for this session", "err", err)
		return nil, err.Error()
	}
	ss.lease = &lease
	v := s.cfg.VPN
	cfg := &VPNConfig{
		Routes: slices.Clone(v.Routes), DNS: slices.Clone(v.DNS),
		SearchDomains: slices.Clone(v.SearchDomains), MTU: v.MTU,
	}
	for _, p := range []netip.Prefix{lease.IPv4, lease.IPv6} {
		if p.IsValid() {
			cfg.Addresses = append(cfg.Addresses, p)
		}
	}
	return cfg, ""
}

// handlePackets serves the session's packets stream: the client's packets
// go through the router, and what the router queues for this client is
// framed back, one write per batch.
func (ss *serverSession) handlePackets(st *yamux.Stream) {
	s := ss.srv
	if ss.lease == nil {
		ss.refuseStream(st, CodeUnsupported, "no VPN configuration for this session")
		return
	}
	ss.mu.Lock()
	dup, draining := ss.packets != nil, ss.draining
	if !dup && !draining {
		ss.packets = st
	}
	ss.mu.Unlock()
	switch {
	case draining:
		ss.refuseStream(st, CodeShutdown, "session is draining")
		return
	case dup:
		ss.refuseStream(st, CodeBadRequest, "session already has a packets stream")
		return
	}
	addPeer := s.router.AddPeer
	if ss.gso {
		addPeer = s.router.AddGSOPeer
	}
	peer, err := addPeer(ss.peer, ss.lease.Addrs())
	if err != nil {
		ss.refuseStream(st, CodeShutdown, err.Error())
		return
	}
	defer s.router.RemovePeer(peer)
	if ss.udp != nil {
		ss.udp.peer.Store(peer)
		defer ss.udp.peer.Store(nil)
	}
	ss.conn.accepted(st.StreamID())
	_ = st.SetWriteDeadline(time.Now().Add(ss.tuning.DeadPeerTimeout))
	if _, err := st.Write(streamReply{Code: CodeOK}.marshal()); err != nil {
		st.Close()
		return
	}
	_ = st.SetWriteDeadline(time.Time{})
	ss.log.Info("VPN up", "addrs", ss.lease.Addrs(), "gso", ss.gso)

	// Router -> client.
	down := make(chan struct{})
	go func() {
		defer close(down)
		// A GSO peer's queue holds packets with their descriptors.
		pw := packetWriter{gso: ss.gso, described: ss.gso}
		pkts := make([][]byte, 0, tun.MaxBatchSize)
		for {
			var err error
			if pkts, err = peer.DequeueMax(pkts[:0], packetBatchBytes); err != nil {
				return // removed
			}
			if ss.udp.send(pkts) == nil {
				ss.ctr.pktsOut.Add(uint64(len(pkts)))
				continue
			}
			ss.conn.waitRoom(packetRoom)
			if err := pw.writeBatch(st, pkts); err != nil {
				ss.logPacketErr("to peer", err)
				_ = st.SetReadDeadline(time.Now()) // end the other direction too
				return
			}
			ss.ctr.pktsOut.Add(uint64(len(pkts)))
		}
	}()

	// Client -> router.
	pr := newPacketReader(ss.conn.consuming(st, st.StreamID()), ss.gso)
	max := s.cfg.VPN.Device.BatchSize()
	var b packetBatch
	var lim ratelog.Limiter
	for {
		err := pr.readBatch(&b, max)
		ss.ctr.pktsIn.Add(uint64(len(b.pkts)))
		if len(b.pkts) > 0 {
			ss.fromPeerMu.Lock()
			ferr := s.router.FromPeer(peer, b.pkts, tun.Offset, nil)
			ss.fromPeerMu.Unlock()
			if ferr != nil {
				if errors.Is(ferr, router.ErrPeerClosed) || errors.Is(ferr, tun.ErrClosed) {
					err = ferr // shutting down
				} else if n, ok := lim.Allow(time.Now(), 1, packetErrorLogEvery); ok {
					ss.log.Warn("writing to the TUN device", "err", ferr, "suppressed", n)
				}
			}
		}
		b.release()
		if err != nil {
			ss.logPacketErr("from peer", err)
			break
		}
	}
	s.router.RemovePeer(peer) // unblocks Dequeue
	<-down
	_ = st.Close()
	ss.log.Info("VPN down")
	ss.mu.Lock()
	draining = ss.draining
	ss.mu.Unlock()
	select {
	case <-ss.done():
	default:
		if !draining {
			// The packets stream ended on its own (a malformed frame, a
			// failed write) while the session lives on: a session
			// keeps its one packets stream, so the client's VPN would
			// stay dead. End the session; the client reconnects.
			ss.close(fmt.Errorf("%w: the packets stream ended", ErrPacketsLost))
		}
	}
}

// readLAN is the one reader of the gateway's TUN device: it hands each
// batch to the router, which queues every packet for the client holding
// its destination. A device that can keep superpackets whole is read with
// ReadGSO (the router cuts them for clients that cannot take them). It
// returns when the device is closed.
func (s *Server) readLAN() {
	dev := s.cfg.VPN.Device
	pkts := make([][]byte, dev.BatchSize())
	readTUN(dev, s.log, nil, func(bufs [][]byte, sizes []int, n int, _ bool) {
		for i := range n {
			pkts[i] = bufs[i][:tun.Offset+sizes[i]]
		}
		s.router.FromLAN(pkts[:n], tun.Offset, nil)
		// Let the session writers just woken for these packets
		// send them before this loop's next read, which on an
		// idle device only fails and parks (the receive loop of
		// third_party/yamux yields after waking a reader for the
		// same reason).
		runtime.Gosched()
	})
}

// closePackets ends the session's packets stream, if any: a draining
// session must not wait for it, as it never ends by itself.
func (ss *serverSession) closePackets() {
	ss.mu.Lock()
	st := ss.packets
	ss.mu.Unlock()
	if st != nil {
		_ = st.SetReadDeadline(time.Now())
		_ = st.Close()
	}
}

// releaseVPN gives the session's lease back. The session's goroutines
// (and so its router peer) are gone by then.
func (ss *serverSession) releaseVPN() {
	ss.dropUDP()
	if ss.lease != nil {
		ss.srv.cfg.VPN.Pool.Release(*ss.lease)
	}
}

// VPNStats returns the packet router's counters: packets delivered and
// dropped by reason. Zero without VPN mode.
func (s *Server) VPNStats() router.Stats {
	if s.router == nil {
		return router.Stats{}
	}
	return s.router.Stats()
}
