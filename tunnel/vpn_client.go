package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/yamux"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/tun"
)

// The client's half of VPN mode (vpn.go has what both halves share).
// The functions below appear in the order a session and its packets meet
// them, as in wireguard-go's device/send.go: the configuration; vpnUp,
// which applies what the gateway pushed and opens the packets stream;
// the device reader, where outbound packets enter the tunnel; the stream
// reader, where inbound ones reach the device; then vpnDown and the
// configuration kept between sessions (ClientVPN.Persist).

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
	// TCPOnly keeps the packets on the TLS connection: the client offers
	// no UDP path (client.toml transport = "tcp").
	TCPOnly bool
	// LocalQueueOnly turns off clock probes towards the gateway: the
	// client's outbound queue then manages only what waits in it, not
	// the queue its packets meet on the path (pathclock.go).
	LocalQueueOnly bool
	// UDPBind, if set, makes each session's UDP socket (tests); nil uses
	// conn.NewStdNetBind.
	UDPBind func() conn.Bind
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
	conn *muxConn  // the session's connection (see muxConn.waitRoom)
	gso  bool      // frames carry GSO descriptors (both sides announced capGSO)
	ctr  *counters // the session's, for packets sent
	conf *appliedConfig
	udp  *udpPath      // the session's UDP path; nil without one
	done chan struct{} // closed when the stream-to-device goroutine returned
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
	udpAt := c.udpTarget(cs)
	tc := clientTunConfig(pushed, gateway, udpAt.Addr())
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
	l := &clientLink{st: st, conn: cs.conn, gso: cs.peerCaps[capGSO], ctr: &cs.ctr, conf: conf, done: make(chan struct{})}
	l.udp = c.startUDP(cs, udpAt)
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
// a client connected to gateway (the peer of its TCP connection) whose UDP
// path, if any, goes to udpAt: when a pushed route covers one of those
// addresses (a full tunnel, or a route to the gateway's network), it
// bypasses the tunnel, or the tunnel would carry itself.
func clientTunConfig(pushed *VPNConfig, gateway, udpAt netip.Addr) tun.Config {
	tc := tun.Config{
		Addresses: pushed.Addresses, MTU: pushed.MTU, Routes: pushed.Routes,
		DNS: pushed.DNS, SearchDomains: pushed.SearchDomains,
	}
	for _, a := range []netip.Addr{gateway, udpAt} {
		if !a.IsValid() || slices.Contains(tc.Bypass, a) {
			continue
		}
		for _, r := range pushed.Routes {
			if r.Contains(a) {
				tc.Bypass = append(tc.Bypass, a)
				break
			}
		}
	}
	return tc
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

// readDevice is the one reader of the client's TUN device: it moves every
// packet (or, when the session passes superpackets through, GSO,
// superpacket) into the client's outbound queue at once, each with its
// GSO descriptor in front, or drops it when there is no session. The
// queue, not the kernel's TUN queue, is where a backlog waits: FQ-CoDel
// there keeps one upload from delaying everything else (see
// router.Queue). When the device closes, so does the queue.
func (c *Client) readDevice() {
	defer c.outq.Close()
	useGSO := func() bool { l := c.link.Load(); return l != nil && l.gso }
	readTUN(c.cfg.VPN.Device, c.log, useGSO, func(bufs [][]byte, sizes []int, n int, gso bool) {
		if c.link.Load() == nil {
			return
		}
		for i := range n {
			desc := noGSODesc[:]
			if gso {
				desc = bufs[i][tun.Offset-tun.GSOLen : tun.Offset]
			}
			c.outq.Enqueue(desc, bufs[i][tun.Offset:tun.Offset+sizes[i]])
		}
	})
}

// noGSODesc is the descriptor of a finished packet.
var noGSODesc = [tun.GSOLen]byte{byte(tun.GSONone)}

// writeQueue is the one writer of the client's outbound queue: each batch
// it takes goes to the current session's packets stream as one write, or
// is dropped when there is none. A session without GSO gets the finished
// packets without their descriptors; superpackets queued for a session
// that has since been replaced by one without GSO are lost (TCP recovers).
func (c *Client) writeQueue() {
	pkts := make([][]byte, 0, c.cfg.VPN.Device.BatchSize())
	var fin [][]byte
	var pw packetWriter
	var failed *clientLink // a link whose stream a write failed on
	for {
		var err error
		if pkts, err = c.outq.DequeueMax(pkts, packetBatchBytes); err != nil {
			return
		}
		// Nothing more goes to a stream a write failed on: a partial
		// frame there would make the rest unreadable.
		l := c.link.Load()
		if l == nil || l == failed {
			continue
		}
		batch := pkts
		pw.gso, pw.described = l.gso, l.gso
		if !l.gso {
			fin = fin[:0]
			for _, p := range pkts {
				if tun.GetGSO(p, tun.GSOLen).Kind == tun.GSONone {
					fin = append(fin, p[tun.GSOLen:])
				}
			}
			batch = fin
		}
		if l.udp.send(batch) == nil {
			l.ctr.pktsOut.Add(uint64(len(batch)))
			continue
		}
		l.conn.waitRoom(packetRoom)
		if err := pw.writeBatch(l.st, batch); err != nil {
			// The link's writer sees this and ends the session;
			// its owner then tears the link down.
			failed = l
			_ = l.st.SetReadDeadline(time.Now())
			continue
		}
		l.ctr.pktsOut.Add(uint64(len(batch)))
	}
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

// vpnDown stops the packets of l's session and undoes its configuration,
// or keeps it for the next session (ClientVPN.Persist) unless the client
// is stopping.
func (c *Client) vpnDown(l *clientLink) {
	if l == nil {
		return
	}
	c.link.CompareAndSwap(l, nil)
	l.udp.close()
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
