package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/datagram"
	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
)

// The gateway's half of the UDP data path (udp.go has the shared part), in
// the order a datagram meets it: the socket and its readers, the session
// a datagram's receiver index names, its authentication, the client's
// address it came from (roaming), then the router peer of the session's
// packets stream; and the way back, which handlePackets takes when the
// client last said "udp".

// ServerUDP turns on the UDP data path for VPN sessions.
type ServerUDP struct {
	// Port is the UDP port datagrams arrive on, on every local address
	// of both families (as WireGuard listens); 0 means the port of the
	// TLS listener.
	Port int
	// Bind, if set, is used instead of UDP sockets (tests). The server
	// opens it in Start and closes it in Stop.
	Bind conn.Bind
	// LocalQueueOnly turns off clock probes towards clients: the
	// sessions' queues then manage only what waits in them, not the
	// queue their packets meet on the path (pathclock.go).
	LocalQueueOnly bool
}

// UDPStats are the UDP path's counters, a gateway's over all its clients,
// a client's over all its sessions.
type UDPStats struct {
	// DatagramsIn and DatagramsOut count authenticated datagrams
	// received and datagrams sent.
	DatagramsIn, DatagramsOut uint64
	// Dropped counts datagrams dropped unopened or failing
	// authentication, by reason: "short", "unknown-session",
	// "auth" (forged or damaged), "replay", "phase", "type".
	Dropped map[string]uint64
	// Roamed counts changes of a client's UDP address.
	Roamed uint64
}

// udp drop reasons, indexing udpGateway.dropped.
const (
	udpDropShort = iota
	udpDropUnknown
	udpDropAuth
	udpDropReplay
	udpDropPhase
	udpDropType
	udpDropReasons
)

var udpDropNames = [udpDropReasons]string{"short", "unknown-session", "auth", "replay", "phase", "type"}

// udpCounters count one end's datagrams; atomics, so the data path never
// locks to count.
type udpCounters struct {
	in, out, roamed atomic.Uint64
	dropped         [udpDropReasons]atomic.Uint64
}

func (c *udpCounters) stats() UDPStats {
	st := UDPStats{DatagramsIn: c.in.Load(), DatagramsOut: c.out.Load(), Roamed: c.roamed.Load(), Dropped: make(map[string]uint64)}
	for i := range c.dropped {
		if n := c.dropped[i].Load(); n > 0 {
			st.Dropped[udpDropNames[i]] = n
		}
	}
	return st
}

func udpDropReason(err error) int {
	switch {
	case errors.Is(err, datagram.ErrShort):
		return udpDropShort
	case errors.Is(err, datagram.ErrReplay):
		return udpDropReplay
	case errors.Is(err, datagram.ErrPhase):
		return udpDropPhase
	case errors.Is(err, datagram.ErrType):
		return udpDropType
	case errors.Is(err, datagram.ErrReceiver):
		return udpDropUnknown
	default:
		return udpDropAuth
	}
}

// udpGateway is the gateway's UDP socket and the sessions reachable
// through it.
type udpGateway struct {
	bind conn.Bind
	port uint16
	mtu  int
	log  *slog.Logger

	localOnly bool // ServerUDP.LocalQueueOnly

	mu    sync.RWMutex
	links map[uint32]*udpLink // by the receiver index the gateway assigned; guarded by mu

	udpCounters
	errLog ratelog.Limiter
}

// startUDP opens the UDP socket and starts its readers.
func (s *Server) startUDP() error {
	u := s.cfg.VPN.UDP
	port := u.Port
	if port == 0 {
		if ta, ok := s.ln.Addr().(*net.TCPAddr); ok {
			port = ta.Port
		}
	}
	bind := u.Bind
	if bind == nil {
		bind = conn.NewStdNetBind()
	}
	fns, actual, err := bind.Open(uint16(port))
	if err != nil {
		return fmt.Errorf("server: udp port %d: %w", port, err)
	}
	g := &udpGateway{bind: bind, port: actual, mtu: s.cfg.VPN.MTU, log: s.log.With("component", "udp"), links: make(map[uint32]*udpLink), localOnly: u.LocalQueueOnly}
	s.udp = g
	g.log.Info("UDP data path listening", "port", actual)
	for _, fn := range fns {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.receiveUDP(fn) }()
	}
	return nil
}

// UDPPort is the gateway's UDP port (after Start; 0 without the UDP path).
func (s *Server) UDPPort() int {
	if s.udp == nil {
		return 0
	}
	return int(s.udp.port)
}

// UDPStats returns the UDP path's counters (zero without it).
func (s *Server) UDPStats() UDPStats {
	g := s.udp
	if g == nil {
		return UDPStats{}
	}
	return g.stats()
}

// udpLink is one session's UDP path at the gateway.
type udpLink struct {
	ss     *serverSession
	g      *udpGateway
	keys   *udpKeys
	recv   uint32                      // the index the gateway assigned
	active atomic.Bool                 // the client's last path message said "udp"
	ep     atomic.Pointer[udpEndpoint] // where the client's last authenticated datagram came from
	peer   atomic.Pointer[router.Peer] // the session's router peer while its packets stream is up
	clock  bool                        // send clock probes: the client answers them, and they are on
	meter  pathMeter
}

type udpEndpoint struct{ ep conn.Endpoint }

// offerUDP sets up the UDP path of a session whose client asked for it in
// its hello, and returns what the gateway's hello says about it; nil when
// the session has none.
func (ss *serverSession) offerUDP(exp datagram.Exporter, theirs *udpHello) *udpHello {
	g := ss.srv.udp
	if g == nil || theirs == nil || theirs.Receiver == 0 || !ss.peerCaps[capUDP] {
		return nil
	}
	l := &udpLink{ss: ss, g: g, clock: ss.peerCaps[capClock] && !g.localOnly}
	g.mu.Lock()
	for {
		l.recv = newReceiverIndex()
		if g.links[l.recv] == nil {
			break
		}
	}
	g.mu.Unlock()
	keys, err := newUDPKeys(exp, ss.id, false, l.recv, theirs.Receiver)
	if err != nil {
		ss.log.Warn("no UDP path for this session", "err", err)
		return nil
	}
	l.keys = keys
	g.mu.Lock()
	g.links[l.recv] = l
	g.mu.Unlock()
	ss.udp = l
	return &udpHello{Receiver: l.recv, Port: int(g.port)}
}

// dropUDP forgets the session's UDP path: its datagrams are dropped
// unopened from now on.
func (ss *serverSession) dropUDP() {
	if l := ss.udp; l != nil {
		l.g.mu.Lock()
		delete(l.g.links, l.recv)
		l.g.mu.Unlock()
		l.peer.Store(nil)
	}
}

// setPath applies the client's path message.
func (l *udpLink) setPath(path string) {
	on := path == pathUDP
	if l.active.Swap(on) != on {
		l.ss.log.Info("VPN packets path", "path", path, "client_udp", l.remote())
	}
	l.ss.udpOn.Store(on)
}

func (l *udpLink) remote() string {
	if e := l.ep.Load(); e != nil {
		return e.ep.DstToString()
	}
	return ""
}

// udpDelivery is a batch of one session's packets on its way from the
// socket reader to the router.
type udpDelivery struct {
	l *udpLink
	b *packetBatch
}

// udpDeliveryDepth is how many batches may wait between a socket reader
// and its deliverer: enough to keep both busy, few enough that the
// socket's own buffer, not this hand-off, absorbs a burst.
const udpDeliveryDepth = 8

var packetBatches = sync.Pool{New: func() any { return new(packetBatch) }}

// receiveUDP reads datagrams with fn until the socket closes. Each one is
// authenticated under its session's key before anything else looks at
// it; the data packets of one session in a batch go to the router
// together, from a second goroutine, so that reading and opening the
// next batch overlaps with routing and writing this one to the TUN
// device (the two take about the same time, and one goroutine doing
// both was the gateway's bottleneck on a fast link). Batches keep their
// order, so a session's packets do too.
func (s *Server) receiveUDP(fn conn.ReceiveFunc) {
	out := make(chan udpDelivery, udpDeliveryDepth)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range out {
			d.l.deliver(d.b)
			packetBatches.Put(d.b)
		}
	}()
	defer func() { close(out); <-done }()
	g := s.udp
	bs := g.bind.BatchSize()
	bufs := udpRecvBufs(bs, udpDatagramMax(g.mtu))
	sizes := make([]int, bs)
	eps := make([]conn.Endpoint, bs)
	batch := packetBatches.Get().(*packetBatch)
	var cur *udpLink
	hand := func() {
		if cur != nil && len(batch.pkts) > 0 {
			out <- udpDelivery{cur, batch}
			batch = packetBatches.Get().(*packetBatch)
		}
	}
	for {
		n, err := fn(bufs, sizes, eps)
		now := clockNow()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if k, ok := g.errLog.Allow(time.Now(), 1, packetErrorLogEvery); ok {
				g.log.Warn("reading UDP", "err", err, "suppressed", k)
			}
			time.Sleep(10 * time.Millisecond) // a socket error that repeats must not spin
			continue
		}
		for i := range n {
			d := bufs[i][:sizes[i]]
			r, ok := datagram.Receiver(d)
			var l *udpLink
			if ok {
				g.mu.RLock()
				l = g.links[r]
				g.mu.RUnlock()
			}
			if l == nil {
				if !ok {
					g.dropped[udpDropShort].Add(1)
				} else {
					g.dropped[udpDropUnknown].Add(1)
				}
				continue
			}
			if l != cur {
				hand()
				cur = l
			}
			pb := packetBufs.Get().(*packetBuf)
			typ, pl, err := l.keys.open.Open(pb.b[:tun.Offset], d)
			if err != nil {
				packetBufs.Put(pb)
				g.dropped[udpDropReason(err)].Add(1)
				continue
			}
			g.in.Add(1)
			l.follow(eps[i])
			switch typ {
			case datagram.TypeData:
				batch.held = append(batch.held, pb)
				batch.pkts = append(batch.pkts, pb.b[:tun.Offset+len(pl)])
			case datagram.TypeProbe:
				l.answer(pl, eps[i])
				packetBufs.Put(pb)
			case datagram.TypeClock:
				if d, ok := sealClockReply(l.keys.sealer(), pl, now); ok {
					l.sendControl(d, eps[i])
				}
				packetBufs.Put(pb)
			case datagram.TypeClockReply:
				if d, ok := l.meter.answer(pl, now); ok {
					l.ss.ctr.setPathQueue(d, now)
					if p := l.peer.Load(); p != nil {
						p.SetPathDelay(d)
					}
				}
				packetBufs.Put(pb)
			default:
				packetBufs.Put(pb) // a probe reply: the gateway sends no probes
			}
		}
		hand()
		cur = nil
		clear(eps[:n])
	}
}

// follow makes ep the client's address if it is a new one: the gateway
// follows the source of authenticated datagrams only (roaming, NAT
// rebinding), never of anything else.
func (l *udpLink) follow(ep conn.Endpoint) {
	cur := l.ep.Load()
	if cur != nil && sameEndpoint(cur.ep, ep) {
		return
	}
	l.ep.Store(&udpEndpoint{ep})
	if cur != nil {
		l.g.roamed.Add(1)
		l.ss.log.Info("client's UDP address changed", "from", cur.ep.DstToString(), "to", ep.DstToString())
	}
}

func sameEndpoint(a, b conn.Endpoint) bool {
	if x, ok := a.(*conn.StdNetEndpoint); ok {
		if y, ok := b.(*conn.StdNetEndpoint); ok {
			return x.AddrPort == y.AddrPort
		}
	}
	return a.DstToString() == b.DstToString()
}

// answer replies to a probe, to where it came from.
func (l *udpLink) answer(payload []byte, ep conn.Endpoint) {
	d, err := l.keys.sealer().Seal(make([]byte, 0, datagram.Overhead+len(payload)), datagram.TypeProbeReply, payload)
	if err != nil {
		l.g.sendFailed(err)
		return
	}
	l.sendControl(d, ep)
}

// sendControl sends one sealed datagram that carries no packet.
func (l *udpLink) sendControl(d []byte, ep conn.Endpoint) {
	if err := l.g.bind.Send([][]byte{d}, ep); err != nil {
		l.g.sendFailed(err)
		return
	}
	l.g.out.Add(1)
}

// deliver routes the batch's packets as from the session's packets
// stream, and empties it.
func (l *udpLink) deliver(b *packetBatch) {
	defer b.release()
	if len(b.pkts) == 0 {
		return
	}
	ss := l.ss
	peer := l.peer.Load()
	if peer == nil {
		return // no packets stream (yet, or any more): nowhere to route
	}
	ss.ctr.pktsIn.Add(uint64(len(b.pkts)))
	ss.fromPeerMu.Lock()
	err := ss.srv.router.FromPeer(peer, b.pkts, tun.Offset, nil)
	ss.fromPeerMu.Unlock()
	if err != nil && !errors.Is(err, router.ErrPeerClosed) && !errors.Is(err, tun.ErrClosed) {
		if n, ok := l.g.errLog.Allow(time.Now(), 1, packetErrorLogEvery); ok {
			ss.log.Warn("writing to the TUN device", "err", err, "suppressed", n)
		}
	}
}

// send sends pkts to the client over UDP if that is the client's path and
// its address is known; otherwise, or when sending fails, it returns an
// error and the caller sends them on the packets stream.
func (l *udpLink) send(pkts [][]byte) error {
	if l == nil || !l.active.Load() {
		return errNoUDPPath
	}
	e := l.ep.Load()
	if e == nil {
		return errNoUDPPath
	}
	b := sealedBatches.Get().(*sealedBatch)
	defer b.release()
	err := b.seal(l.keys.sealer(), datagram.TypeData, pkts)
	if err == nil {
		err = b.send(l.g.bind, e.ep)
	}
	if err != nil {
		l.g.sendFailed(err)
		return err
	}
	l.g.out.Add(uint64(len(pkts)))
	l.ss.announceRekey(l.keys)
	if l.clock {
		if now := clockNow(); l.meter.due(now) {
			if d, err := sealClock(l.keys.sealer(), now); err == nil {
				l.sendControl(d, e.ep)
			}
		}
	}
	return nil
}

func (g *udpGateway) sendFailed(err error) {
	if n, ok := g.errLog.Allow(time.Now(), 1, packetErrorLogEvery); ok {
		g.log.Warn("sending UDP", "err", err, "suppressed", n)
	}
}
