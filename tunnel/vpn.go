package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// VPN mode: the gateway assigns each client that asks for it addresses
// from its pools (ipam), pushes them with routes, DNS and MTU in its hello,
// and the client opens one packets stream over which IP packets flow in
// both directions, length-prefixed and batched (see packets.go). At the
// gateway every packet goes through the router (anti-spoofing, policy per
// flow, client-to-client control, drop-not-block queues); the router's LAN
// is the gateway's TUN device.

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

// VPNStats returns the packet router's counters: packets delivered and
// dropped by reason. Zero without VPN mode.
func (s *Server) VPNStats() router.Stats {
	if s.router == nil {
		return router.Stats{}
	}
	return s.router.Stats()
}

// readLAN is the one reader of the gateway's TUN device: it hands each
// batch to the router, which queues every packet for the client holding
// its destination. A device that can keep superpackets whole is read with
// ReadGSO (the router cuts them for clients that cannot take them). It
// returns when the device is closed.
func (s *Server) readLAN() {
	dev := s.cfg.VPN.Device
	gdev, gso := tun.AsGSO(dev)
	batch := dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tun.BufferSize)
	}
	sizes := make([]int, batch)
	pkts := make([][]byte, batch)
	var lim ratelog.Limiter
	for {
		var n int
		var err error
		if gso {
			if sizes[0], err = gdev.ReadGSO(bufs[0], tun.Offset); err == nil {
				n = 1
			}
		} else {
			n, err = dev.Read(bufs, sizes, tun.Offset)
		}
		for i := range n {
			pkts[i] = bufs[i][:tun.Offset+sizes[i]]
		}
		if n > 0 {
			s.router.FromLAN(pkts[:n], tun.Offset, nil)
			// Let the session writers just woken for these packets
			// send them before this loop's next read, which on an
			// idle device only fails and parks (see muxConn.Read).
			runtime.Gosched()
		}
		if errors.Is(err, tun.ErrClosed) {
			return
		}
		if err != nil {
			// Per-batch trouble (ErrTooManySegments, a refused read):
			// IP loss is recovered end to end.
			if n, ok := lim.Allow(time.Now(), 1, packetErrorLogEvery); ok {
				s.log.Warn("reading the TUN device", "err", err, "suppressed", n)
			}
		}
	}
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

// releaseVPN gives the session's lease back. The session's goroutines
// (and so its router peer) are gone by then.
func (ss *serverSession) releaseVPN() {
	if ss.lease != nil {
		ss.srv.cfg.VPN.Pool.Release(*ss.lease)
	}
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
			if pkts, err = peer.Dequeue(pkts[:0]); err != nil {
				return // removed
			}
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
			if ferr := s.router.FromPeer(peer, b.pkts, tun.Offset, nil); ferr != nil {
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

func (s *session) logPacketErr(dir string, err error) {
	if !isClosedErr(err) && !errors.Is(err, yamux.ErrTimeout) && !errors.Is(err, router.ErrPeerClosed) &&
		!errors.Is(err, tun.ErrClosed) && !isTimeout(err) {
		s.log.Warn("packets stream failed", "direction", dir, "err", err)
	}
}

// ClientVPN turns on VPN mode at the client.
type ClientVPN struct {
	// Device is the client's TUN device. The client reads it from Start
	// on and closes it on Stop; between sessions its packets are dropped.
	Device tun.Device
	// Configurator applies the pushed configuration to the device for
	// each session and undoes it when the session ends (a
	// tun.Configurator). Nil applies nothing: for tests, or a device
	// configured by other means.
	Configurator Configurator
	// OnUp, if set, is called when a session's VPN is up: configured and
	// its packets stream open. It must not block.
	OnUp func(tun.Config)
	// OnDown, if set, is called after a session's VPN was torn down and
	// its configuration undone (or kept, with Persist). It must not block.
	OnDown func()
	// Persist keeps the device's configuration (addresses, routes, DNS)
	// from one session to the next instead of undoing it when a session
	// ends: while the client reconnects, packets for the tunnel's routes
	// are dropped rather than leaving by the routes underneath (for a
	// full tunnel: nothing leaves outside it, a kill switch), and a
	// reconnect that gets the same configuration changes nothing on the
	// host. A different configuration replaces the kept one; Stop undoes
	// it. When the next gateway to dial is itself inside the kept routes
	// (another endpoint of a full tunnel), the kept configuration is
	// undone first, or the dial would go into the tunnel.
	Persist bool
}

// Configurator applies a tun.Config to a device; tun.Configurator
// implements it.
type Configurator interface {
	Apply(ctx context.Context, dev string, cfg tun.Config) (undo func() error, err error)
}

// clientLink is one session's VPN: the packets stream and how to undo the
// device configuration.
type clientLink struct {
	st   *yamux.Stream
	gso  bool      // frames carry GSO descriptors (both sides announced capGSO)
	ctr  *counters // the session's, for packets sent
	conf *appliedConfig
	done chan struct{} // closed when the stream-to-device goroutine returned
}

// appliedConfig is a configuration applied to the device and how to undo
// it.
type appliedConfig struct {
	cfg  tun.Config
	undo func() error
}

// blocks reports whether a dial to addr would go into the tunnel: a route
// of the configuration covers it and it is not bypassed.
func (a *appliedConfig) blocks(addr netip.Addr) bool {
	addr = addr.Unmap()
	if slices.Contains(a.cfg.Bypass, addr) {
		return false
	}
	for _, r := range a.cfg.Routes {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}

// sameConfig reports whether two device configurations are the same.
func sameConfig(a, b tun.Config) bool {
	return a.MTU == b.MTU && slices.Equal(a.Addresses, b.Addresses) && slices.Equal(a.Routes, b.Routes) &&
		slices.Equal(a.Bypass, b.Bypass) && slices.Equal(a.DNS, b.DNS) && slices.Equal(a.SearchDomains, b.SearchDomains)
}

// readDevice is the one reader of the client's TUN device: each batch goes
// to the current session's packets stream as one write, or is dropped when
// there is none. When the session passes superpackets through (GSO), each
// read is one packet or superpacket, framed in place.
func (c *Client) readDevice() {
	dev := c.cfg.VPN.Device
	gdev, canGSO := tun.AsGSO(dev)
	batch := dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tun.BufferSize)
	}
	sizes := make([]int, batch)
	pkts := make([][]byte, batch)
	var pw packetWriter
	var lim ratelog.Limiter
	var failed *clientLink // a link whose stream a write failed on
	for {
		var (
			n   int
			gso bool // read with ReadGSO
			err error
		)
		if l := c.link.Load(); canGSO && l != nil && l.gso {
			gso = true
			if sizes[0], err = gdev.ReadGSO(bufs[0], tun.Offset); err == nil {
				n = 1
			}
		} else {
			n, err = dev.Read(bufs, sizes, tun.Offset)
		}
		if n > 0 {
			// The session may have changed during the read. Nothing more
			// goes to a stream a write failed on: a partial frame there
			// would make the rest unreadable.
			if l := c.link.Load(); l != nil && l != failed {
				var werr error
				switch {
				case gso && l.gso:
					werr = writeGSO(l.st, bufs[0], tun.Offset, sizes[0])
				case gso && tun.GetGSO(bufs[0], tun.Offset).Kind != tun.GSONone:
					n = 0 // a superpacket for a session without GSO: lost, TCP recovers
				default:
					for i := range n {
						pkts[i] = bufs[i][tun.Offset : tun.Offset+sizes[i]]
					}
					pw.gso = l.gso
					werr = pw.writeBatch(l.st, pkts[:n])
				}
				if werr != nil {
					// The link's writer sees this and ends the session;
					// its owner then tears the link down.
					failed = l
					_ = l.st.SetReadDeadline(time.Now())
				} else {
					l.ctr.pktsOut.Add(uint64(n))
				}
			}
		}
		if errors.Is(err, tun.ErrClosed) {
			return
		}
		if err != nil {
			if n, ok := lim.Allow(time.Now(), 1, packetErrorLogEvery); ok {
				c.log.Warn("reading the TUN device", "err", err, "suppressed", n)
			}
		}
	}
}

// vpnUp configures the device with what the gateway pushed and opens the
// session's packets stream. It returns nil when the session has no VPN
// (the gateway offers none, or it failed; logged).
func (c *Client) vpnUp(cs *clientSession) *clientLink {
	v := c.cfg.VPN
	pushed := cs.info.VPN
	if pushed == nil {
		msg := "gateway offers no VPN mode"
		if cs.vpnErr != "" {
			msg = "gateway assigned no VPN address: " + cs.vpnErr
		}
		cs.log.Error("VPN not available; port forwards still work", "reason", msg)
		c.noteKept(cs)
		return nil
	}
	var gateway netip.Addr
	if ta, ok := cs.conn.RemoteAddr().(*net.TCPAddr); ok {
		gateway = ta.AddrPort().Addr().Unmap()
	}
	tc := clientTunConfig(pushed, gateway)
	if err := tc.Validate(); err != nil {
		cs.log.Error("gateway pushed an unusable VPN configuration", "err", err)
		c.noteKept(cs)
		return nil
	}
	conf := c.takeKept()
	if conf != nil && !sameConfig(conf.cfg, tc) {
		cs.log.Info("the gateway pushed a different VPN configuration; replacing the kept one")
		c.undoConfig(conf)
		conf = nil
	}
	if conf == nil {
		conf = &appliedConfig{cfg: tc, undo: func() error { return nil }}
		if v.Configurator != nil {
			name, err := v.Device.Name()
			if err == nil {
				conf.undo, err = v.Configurator.Apply(c.ctx, name, tc)
			}
			if err != nil {
				cs.log.Error("cannot configure the TUN device", "err", err)
				return nil
			}
		}
	}
	st, err := cs.openPackets()
	if err != nil {
		c.releaseConfig(conf)
		cs.log.Error("gateway refused the packets stream", "err", err)
		return nil
	}
	l := &clientLink{st: st, gso: cs.peerCaps[capGSO], ctr: &cs.ctr, conf: conf, done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(l.done)
		cs.writeDevice(v.Device, st, l.gso)
		if c.link.Load() == l && c.ctx.Err() == nil {
			// Not vpnDown's doing: the stream ended while the session
			// is up, and the gateway gives a session one packets
			// stream. Reconnect rather than carry a dead VPN.
			cs.close(fmt.Errorf("%w: the packets stream ended", ErrPacketsLost))
		}
	}()
	c.link.Store(l)
	cs.log.Info("VPN up", "addresses", tc.Addresses, "routes", tc.Routes, "dns", tc.DNS, "mtu", tc.MTU, "gso", l.gso)
	if v.OnUp != nil {
		v.OnUp(tc)
	}
	return l
}

// clientTunConfig is the device configuration for a pushed VPN config at
// a client connected to gateway: when a pushed route covers the gateway's
// own address (a full tunnel, or a route to the gateway's network), that
// address bypasses the tunnel, or the tunnel would carry itself.
func clientTunConfig(pushed *VPNConfig, gateway netip.Addr) tun.Config {
	tc := tun.Config{
		Addresses: pushed.Addresses, MTU: pushed.MTU, Routes: pushed.Routes,
		DNS: pushed.DNS, SearchDomains: pushed.SearchDomains,
	}
	for _, r := range pushed.Routes {
		if gateway.IsValid() && r.Contains(gateway) {
			tc.Bypass = []netip.Addr{gateway}
			break
		}
	}
	return tc
}

// vpnDown stops the packets of l's session and undoes its configuration,
// or keeps it for the next session (ClientVPN.Persist) unless the client
// is stopping.
func (c *Client) vpnDown(l *clientLink) {
	if l == nil {
		return
	}
	c.link.CompareAndSwap(l, nil)
	_ = l.st.SetReadDeadline(time.Now())
	_ = l.st.Close()
	<-l.done
	if c.releaseConfig(l.conf) {
		c.log.Info("VPN down; configuration kept until the next session: packets for the tunnel are dropped meanwhile")
	} else {
		c.log.Info("VPN down")
	}
	if c.cfg.VPN.OnDown != nil {
		c.cfg.VPN.OnDown()
	}
}

// releaseConfig is the end of a session's use of conf: it is kept for the
// next session (and true returned) with Persist while the client runs,
// else undone.
func (c *Client) releaseConfig(conf *appliedConfig) bool {
	if c.cfg.VPN.Persist && c.ctx.Err() == nil {
		c.keptMu.Lock()
		c.kept = conf
		c.keptMu.Unlock()
		return true
	}
	c.undoConfig(conf)
	return false
}

// noteKept says, for a session without VPN, that a kept configuration
// stays: the client fails closed until a session brings the VPN back.
func (c *Client) noteKept(cs *clientSession) {
	c.keptMu.Lock()
	kept := c.kept != nil
	c.keptMu.Unlock()
	if kept {
		cs.log.Warn("the kept VPN configuration stays in place: packets for the tunnel are dropped until a session with VPN")
	}
}

// KeptVPN is the configuration kept on the device between sessions
// (ClientVPN.Persist), if there is one now.
func (c *Client) KeptVPN() (tun.Config, bool) {
	c.keptMu.Lock()
	defer c.keptMu.Unlock()
	if c.kept == nil {
		return tun.Config{}, false
	}
	return c.kept.cfg, true
}

// takeKept removes and returns the kept configuration, if any.
func (c *Client) takeKept() *appliedConfig {
	c.keptMu.Lock()
	defer c.keptMu.Unlock()
	conf := c.kept
	c.kept = nil
	return conf
}

// releaseKeptFor undoes the kept configuration when a dial to addr would
// go into the tunnel it routes to, where nothing answers until a session
// is up. It runs in the dialer (net.Dialer.ControlContext), possibly for
// several addresses at once.
func (c *Client) releaseKeptFor(addr netip.Addr) {
	c.keptMu.Lock()
	defer c.keptMu.Unlock()
	if c.kept == nil || !c.kept.blocks(addr) {
		return
	}
	c.log.Warn("undoing the kept VPN configuration: the gateway to dial is inside its routes", "gateway", addr)
	c.undoConfig(c.kept)
	c.kept = nil
}

func (c *Client) undoConfig(conf *appliedConfig) {
	if conf == nil {
		return
	}
	if err := conf.undo(); err != nil {
		c.log.Warn("undoing the TUN configuration", "err", err)
	}
}

// openPackets opens the session's packets stream.
func (cs *clientSession) openPackets() (*yamux.Stream, error) {
	hdr, _ := streamHeader{Kind: KindPackets}.marshal()
	st, err := cs.mux.OpenStream()
	if err != nil {
		return nil, err
	}
	_ = st.SetDeadline(time.Now().Add(cs.replyTimeout()))
	if _, err := st.Write(hdr); err != nil {
		st.Close()
		return nil, err
	}
	rep, err := readStreamReply(st)
	if err == nil {
		err = rep.err()
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	_ = st.SetDeadline(time.Time{})
	return st, nil
}

// writeDevice writes the packets arriving on st to the device in batches
// until the stream ends. With GSO, frames carry descriptors: finished
// packets still go through Write, which coalesces them (GRO), and the rest
// through WriteGSO, in order.
func (cs *clientSession) writeDevice(dev tun.Device, st *yamux.Stream, gso bool) {
	pr := newPacketReader(st, gso)
	max := dev.BatchSize()
	gdev, _ := tun.AsGSO(dev)
	var b packetBatch
	var lim ratelog.Limiter
	for {
		err := pr.readBatch(&b, max)
		cs.ctr.pktsIn.Add(uint64(len(b.pkts)))
		if len(b.pkts) > 0 {
			// Write may reorder b.pkts and grow its elements up to their
			// capacity; b.held keeps the buffers for release.
			var werr error
			if gso && gdev != nil {
				werr = writeRuns(dev, gdev, b.pkts)
			} else {
				_, werr = dev.Write(b.pkts, tun.Offset)
			}
			if werr != nil {
				if errors.Is(werr, tun.ErrClosed) {
					err = werr
				} else if n, ok := lim.Allow(time.Now(), 1, packetErrorLogEvery); ok {
					cs.log.Warn("writing to the TUN device", "err", werr, "suppressed", n)
				}
			}
		}
		b.release()
		if err != nil {
			cs.logPacketErr("from gateway", err)
			return
		}
	}
}

// writeRuns writes pkts (each at tun.Offset, descriptor in front) in runs:
// finished packets with Write, superpackets and packets with a pending
// checksum with WriteGSO. It returns the first closure, else the last error.
func writeRuns(dev tun.Device, gdev tun.GSODevice, pkts [][]byte) error {
	var errs error
	for len(pkts) > 0 {
		plain := tun.GetGSO(pkts[0], tun.Offset).Kind == tun.GSONone
		k := 1
		for k < len(pkts) && (tun.GetGSO(pkts[k], tun.Offset).Kind == tun.GSONone) == plain {
			k++
		}
		var err error
		if plain {
			_, err = dev.Write(pkts[:k], tun.Offset)
		} else {
			_, err = gdev.WriteGSO(pkts[:k], tun.Offset)
		}
		if errors.Is(err, tun.ErrClosed) {
			return err
		}
		if err != nil {
			errs = err
		}
		pkts = pkts[k:]
	}
	return errs
}
