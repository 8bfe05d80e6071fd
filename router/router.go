// Package router is the gateway's packet router for VPN mode: it moves IP
// packets between client sessions (peers) and the gateway's TUN device (the
// LAN side), enforcing anti-spoofing and the access policy per packet.
//
// # Rules
//
// A packet from a peer (FromPeer) is, in this order:
//   - dropped as "malformed" if its headers do not parse (see below);
//   - dropped as "link-local" if its destination is link-scoped
//     (fe80::/10, ff02::/16, 169.254.0.0/16, 224.0.0.0/24,
//     255.255.255.255): routers never forward those, and client operating
//     systems send them as soon as the interface is up;
//   - dropped as "spoof" unless its source is one of the peer's assigned
//     addresses;
//   - if its destination is another peer's address: delivered to that peer
//     when client-to-client traffic is enabled, else dropped as
//     "client-to-client" (policy is not consulted for peer-to-peer traffic);
//   - otherwise checked against the policy as Target{Addr: dst, Port: dst
//     port, Proto: "tcp", "udp", "icmp" or "ip"} and written to the LAN if
//     allowed, else dropped as "policy". Decisions are cached per peer and
//     flow (proto, dst, port) and the cache is invalidated by SetPolicy.
//
// A packet from the LAN (FromLAN) is routed by destination address to the
// peer holding it and queued for that peer, or dropped as "no-route". It is
// not checked against the policy: the router is route-level, not a stateful
// firewall. It assumes that what arrives for a peer's address is a reply to
// something the peer sent and the policy allowed, which holds when the LAN
// cannot open connections to clients by itself (the usual NAT or firewall
// in front of the client pool). Restrict LAN-to-client traffic on the
// gateway host's firewall if that does not hold.
//
// Ports for the policy: TCP and UDP have them; ICMP, other protocols and
// non-first fragments (IPv4 fragment offset > 0, IPv6 fragment headers with
// offset > 0) are checked with port 0, which matches only rules that allow
// the destination on every port. So a fragmented datagram to a target
// allowed on some ports only loses its later fragments; TUN MTUs and path
// MTU discovery keep TCP from fragmenting, and the fragments cannot change
// the ports the first fragment was checked with (offset 0 is always a first
// fragment). IPv6 extension headers (hop-by-hop, routing, fragment,
// destination options, AH) are walked, at most 8 of them, to find the
// transport header; a routing header with segments left and IPv4 source
// route options are refused as malformed because they make the final
// destination differ from the checked one. IPv4-mapped IPv6 addresses are
// malformed too.
//
// # Queues
//
// Every peer has a bounded outbound queue (Config.QueueLen packets).
// Enqueueing never blocks: when the queue is full the packet is dropped and
// counted as "queue", so one slow client never stalls the LAN reader or
// other peers.
//
// # Wiring (for the tunnel)
//
// The gateway creates one Router with the TUN device as its LAN (any
// tun.Device satisfies LAN) and the compiled policy:
//
//	r, err := router.New(router.Config{LAN: dev, Policy: pol, ClientToClient: c2c}, logger)
//
// The LAN side is attached by one goroutine the gateway owns, reading the
// device in batches and handing each batch over as is:
//
//	for {
//		n, err := dev.Read(bufs, sizes, tun.Offset)
//		for i := range n {
//			pkts[i] = bufs[i][:tun.Offset+sizes[i]]
//		}
//		r.FromLAN(pkts[:n], tun.Offset, nil)
//		if errors.Is(err, tun.ErrClosed) { return }
//	}
//
// FromLAN copies what it queues, so the buffers can be reused right away.
//
// A VPN session registers as a Peer with the addresses its ipam lease gave
// it, and runs two goroutines:
//
//	peer, err := r.AddPeer(id, lease.Addrs())
//	// reader: decode packets from the session into buffers with
//	// tun.Offset headroom and tun.BufferSize capacity, then
//	r.FromPeer(peer, bufs, tun.Offset, nil) // one call per batch
//	// writer: drain the peer's queue in batches, one framed write each
//	for {
//		pkts, err = peer.Dequeue(pkts[:0]) // blocks; nil error until removed
//		if err != nil { return }
//		... write pkts as one frame; they stay valid until the next Dequeue ...
//	}
//
// On session end: r.RemovePeer(peer), which unblocks Dequeue with
// ErrPeerClosed; wait for both goroutines; then pool.Release(lease).
//
// When the same identity has two sessions at once (a reconnect while the
// old session is still closing, which ipam answers with the same lease), the
// peer added last receives the traffic for the shared addresses; when it is
// removed, the earlier one gets it back if still registered.
//
// # Concurrency
//
// FromLAN, FromPeer for different peers, AddPeer, RemovePeer, SetPolicy and
// Stats may be called concurrently. FromPeer for one peer must be called by
// one goroutine at a time (it owns the peer's flow cache), and Dequeue for
// one peer likewise.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tun"
)

// Policy decides which targets an identity may reach. *policy.Policy
// implements it. Dial is called concurrently and should not allocate: it
// runs per packet for flows not in the cache.
type Policy interface {
	Dial(id *pki.Identity, t policy.Target) policy.Decision
}

var _ Policy = (*policy.Policy)(nil)

// LAN is where allowed packets from peers go: the gateway's TUN device.
// tun.Device implements it. Write is called concurrently, with batches in
// the form FromPeer received them (each packet at bufs[i][offset:]).
type LAN interface {
	Write(bufs [][]byte, offset int) (int, error)
}

// GSOLAN is a LAN that also takes superpackets whole, each with its GSO
// descriptor in front (tun.GSODevice implements it): the LAN of a router
// with GSO peers.
type GSOLAN interface {
	WriteGSO(bufs [][]byte, offset int) (int, error)
}

// Config configures a Router. Zero values pick the defaults.
type Config struct {
	// LAN receives allowed packets from peers. Required.
	LAN LAN
	// Policy decides per flow. Required; replace it with SetPolicy.
	Policy Policy
	// ClientToClient lets peers reach each other's addresses directly.
	ClientToClient bool
	// QueueLen is each peer's outbound queue length in packets; default
	// 1024.
	QueueLen int
	// FlowCacheSize is the number of policy decisions cached per peer,
	// rounded up to a power of two; default 256. Negative disables the
	// cache (every packet is evaluated).
	FlowCacheSize int
	// LogPerSecond is how many dropped packets per peer and second are
	// logged; the rest are counted and reported as "suppressed" with
	// the next logged one. Default 5; negative logs none.
	LogPerSecond int
	// Now is the clock for log rate limiting; default time.Now.
	Now func() time.Time
	// LANGSO says that packets given to FromLAN carry a GSO descriptor
	// in front (tun.GSODevice.ReadGSO) and may be superpackets: GSO
	// peers get them whole, others cut into packets.
	LANGSO bool
}

// Defaults for Config.
const (
	DefaultQueueLen      = 1024
	DefaultFlowCacheSize = 256
	DefaultLogPerSecond  = 5
)

// Sentinel errors.
var (
	// ErrPeerClosed is returned by Dequeue and FromPeer once the peer was
	// removed, and by AddPeer once the router was closed.
	ErrPeerClosed = errors.New("router: peer removed")

	// ErrInvalidConfig wraps errors about Config and AddPeer arguments.
	ErrInvalidConfig = errors.New("invalid router config")
)

// Router routes packets between peers and the LAN. Create it with New.
type Router struct {
	lan      LAN
	lanGSO   bool
	c2c      bool
	queueLen int
	cacheLen int
	logRate  int
	now      func() time.Time
	logger   *slog.Logger

	pol atomic.Pointer[policyGen]

	counters [numCounters]atomic.Uint64

	mu     sync.RWMutex // guards the fields below; FromLAN/FromPeer read-lock it per batch
	owners map[netip.Addr][]*Peer
	routes map[netip.Addr]*Peer // the last registered owner of each address
	peers  map[*Peer]struct{}
	closed bool
}

// policyGen is a policy and the generation number the flow caches know it
// by. Generations start at 1 so that an empty cache slot (0) never matches.
type policyGen struct {
	pol Policy
	gen uint64
}

// New returns a Router. It starts no goroutines.
func New(cfg Config, logger *slog.Logger) (*Router, error) {
	if cfg.LAN == nil {
		return nil, fmt.Errorf("%w: no LAN", ErrInvalidConfig)
	}
	if cfg.Policy == nil {
		return nil, fmt.Errorf("%w: no policy", ErrInvalidConfig)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueLen < 0 {
		return nil, fmt.Errorf("%w: negative queue length %d", ErrInvalidConfig, cfg.QueueLen)
	}
	switch {
	case cfg.FlowCacheSize == 0:
		cfg.FlowCacheSize = DefaultFlowCacheSize
	case cfg.FlowCacheSize < 0:
		cfg.FlowCacheSize = 0
	case cfg.FlowCacheSize > 1<<20:
		return nil, fmt.Errorf("%w: flow cache size %d larger than %d", ErrInvalidConfig, cfg.FlowCacheSize, 1<<20)
	}
	switch {
	case cfg.LogPerSecond == 0:
		cfg.LogPerSecond = DefaultLogPerSecond
	case cfg.LogPerSecond < 0:
		cfg.LogPerSecond = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{
		lan:      cfg.LAN,
		lanGSO:   cfg.LANGSO,
		c2c:      cfg.ClientToClient,
		queueLen: cfg.QueueLen,
		cacheLen: cfg.FlowCacheSize,
		logRate:  cfg.LogPerSecond,
		now:      cfg.Now,
		logger:   logger,
		owners:   make(map[netip.Addr][]*Peer),
		routes:   make(map[netip.Addr]*Peer),
		peers:    make(map[*Peer]struct{}),
	}
	r.pol.Store(&policyGen{pol: cfg.Policy, gen: 1})
	return r, nil
}

// SetPolicy replaces the policy. Every cached decision is invalidated: the
// next packet of every flow is checked against pol. Batches already being
// processed finish under the old policy.
func (r *Router) SetPolicy(pol Policy) {
	if pol == nil {
		return
	}
	for {
		old := r.pol.Load()
		if r.pol.CompareAndSwap(old, &policyGen{pol: pol, gen: old.gen + 1}) {
			return
		}
	}
}

// AddPeer registers a session of id holding addrs and returns its Peer.
// Packets for addrs go to the new peer from now on, even if an earlier
// session still holds them.
func (r *Router) AddPeer(id *pki.Identity, addrs []netip.Addr) (*Peer, error) {
	return r.addPeer(id, addrs, false)
}

// AddGSOPeer is AddPeer for a session whose packets carry GSO descriptors
// (tun.GSO, in the headroom right before each packet): FromPeer hands its
// packets to the LAN's WriteGSO. Superpackets cannot go into another
// peer's queue, so it needs client-to-client traffic off, and a LAN that is
// a GSOLAN.
func (r *Router) AddGSOPeer(id *pki.Identity, addrs []netip.Addr) (*Peer, error) {
	if r.c2c {
		return nil, fmt.Errorf("%w: GSO peers need client-to-client traffic off", ErrInvalidConfig)
	}
	if _, ok := r.lan.(GSOLAN); !ok {
		return nil, fmt.Errorf("%w: the LAN does not take GSO packets", ErrInvalidConfig)
	}
	return r.addPeer(id, addrs, true)
}

func (r *Router) addPeer(id *pki.Identity, addrs []netip.Addr, gso bool) (*Peer, error) {
	if id == nil {
		return nil, fmt.Errorf("%w: peer without identity", ErrInvalidConfig)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: peer %s has no addresses", ErrInvalidConfig, id.Name())
	}
	for _, a := range addrs {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return nil, fmt.Errorf("%w: peer %s: unusable address %v", ErrInvalidConfig, id.Name(), a)
		}
	}
	p := &Peer{
		id:    id,
		name:  id.Name(),
		addrs: slices.Clone(addrs),
		gso:   gso,
		cache: newFlowCache(r.cacheLen),
		q:     newFQQueue(r.queueLen, DefaultQueueBytes, &r.counters[queueDrops], &r.counters[ecnMarked]),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrPeerClosed
	}
	r.peers[p] = struct{}{}
	for _, a := range p.addrs {
		r.owners[a] = append(r.owners[a], p)
		r.routes[a] = p
	}
	return p, nil
}

// RemovePeer unregisters p: packets for its addresses go to the previous
// session holding them, if any, else are dropped as "no-route". Its queued
// packets are discarded and a pending Dequeue returns ErrPeerClosed.
// Idempotent.
func (r *Router) RemovePeer(p *Peer) {
	r.mu.Lock()
	if _, ok := r.peers[p]; !ok {
		r.mu.Unlock()
		return
	}
	delete(r.peers, p)
	for _, a := range p.addrs {
		owners := slices.DeleteFunc(r.owners[a], func(o *Peer) bool { return o == p })
		if len(owners) == 0 {
			delete(r.owners, a)
			delete(r.routes, a)
		} else {
			r.owners[a] = owners
			r.routes[a] = owners[len(owners)-1]
		}
	}
	r.mu.Unlock()
	p.removed.Store(true)
	p.q.close()
	if n := p.log.Flush(); n > 0 {
		r.logger.Info("dropped packets not logged", "peer", p.name, "suppressed", n)
	}
}

// Close removes every peer and makes AddPeer fail with ErrPeerClosed. It
// does not close the LAN, which the caller owns.
func (r *Router) Close() {
	r.mu.Lock()
	r.closed = true
	peers := make([]*Peer, 0, len(r.peers))
	for p := range r.peers {
		peers = append(peers, p)
	}
	r.mu.Unlock()
	for _, p := range peers {
		r.RemovePeer(p)
	}
}

// FromPeer routes a batch of packets received from peer p: packet i is
// bufs[i][offset:]. Allowed packets are written to the LAN in one Write
// with the same buffers and offset, so bufs must meet the LAN's buffer
// rules (for a tun.Device: offset at least tun.Offset, capacity
// tun.BufferSize). Packets for other peers are copied into their queues. The
// caller may reuse bufs when FromPeer returns.
//
// If verdicts is not nil it must be at least len(bufs) long and receives
// each packet's verdict. The error is the LAN's write error, if any (the
// packets it did not take are counted as LANError), or ErrPeerClosed when
// p was removed, in which case nothing is routed.
func (r *Router) FromPeer(p *Peer, bufs [][]byte, offset int, verdicts []Verdict) error {
	if p.removed.Load() {
		return ErrPeerClosed
	}
	pg := r.pol.Load()
	var counts [numCounters]uint32
	batch := p.lanBatch[:0]

	// A batch usually holds runs of one flow (a TCP burst); the verdict
	// depends only on the addresses, protocol class and destination port,
	// all fixed within the batch, so a run is decided once.
	var last flow
	lastV, lastRule := DropMalformed, ""

	r.mu.RLock()
	for i, b := range bufs {
		v, rule := DropMalformed, ""
		var f flow
		if len(b) > offset && parse(b[offset:], &f) {
			if f.src == last.src && f.dst == last.dst && f.dport == last.dport && f.class == last.class {
				v, rule = lastV, lastRule
			} else {
				v, rule = r.decide(p, pg, &f)
				last, lastV, lastRule = f, v, rule
			}
			switch v {
			case ToLAN:
				batch = append(batch, b)
			case ToPeer:
				v = r.routes[f.dst].enqueue(b[offset : offset+f.length])
			}
		}
		switch v {
		case DropMalformed, DropSpoof, DropClientToClient, DropPolicy:
			// The peer's own doing; queue drops are the receiver's
			// and link-local ones are expected noise.
			r.logDrop(p, v, &f, rule)
		}
		counts[v]++
		if verdicts != nil {
			verdicts[i] = v
		}
	}
	r.mu.RUnlock()

	var err error
	if len(batch) > 0 {
		var n int
		if p.gso {
			n, err = r.lan.(GSOLAN).WriteGSO(batch, offset)
		} else {
			n, err = r.lan.Write(batch, offset)
		}
		if n = max(0, min(n, len(batch))); n < len(batch) {
			counts[ToLAN] -= uint32(len(batch) - n)
			counts[lanError] += uint32(len(batch) - n)
		}
		clear(batch) // do not pin the caller's buffers
	}
	p.lanBatch = batch[:0]
	r.add(&counts)
	return err
}

// decide applies the rules to a parsed packet from p and returns the
// verdict and, for policy verdicts, the deciding rule. Callers hold r.mu
// (read).
func (r *Router) decide(p *Peer, pg *policyGen, f *flow) (Verdict, string) {
	if linkScoped(f.dst) {
		return DropLinkLocal, ""
	}
	if !p.owns(f.src) {
		return DropSpoof, ""
	}
	if _, isPeer := r.routes[f.dst]; isPeer {
		if !r.c2c {
			return DropClientToClient, ""
		}
		return ToPeer, ""
	}
	d := p.cache.decide(pg.pol, pg.gen, p.id, f.dst, f.class, f.dport)
	if !d.Allow {
		return DropPolicy, d.Rule
	}
	return ToLAN, d.Rule
}

// FromLAN routes a batch of packets read from the LAN: packet i is
// bufs[i][offset:] (bytes after the IP header's length are ignored). Each is
// copied into the queue of the peer holding its destination address; the
// caller may reuse bufs when FromLAN returns. If verdicts is not nil it must
// be at least len(bufs) long and receives each packet's verdict.
func (r *Router) FromLAN(bufs [][]byte, offset int, verdicts []Verdict) {
	var counts [numCounters]uint32
	var lastDst netip.Addr // runs of one destination are looked up once
	var lastPeer *Peer
	r.mu.RLock()
	for i, b := range bufs {
		v := DropMalformed
		if len(b) > offset {
			if dst, n, ok := destination(b[offset:]); ok {
				if dst != lastDst {
					lastDst, lastPeer = dst, r.routes[dst]
				}
				v = DropNoRoute
				if lastPeer != nil {
					v = r.deliver(lastPeer, b, offset, n)
				}
			}
		}
		counts[v]++
		if verdicts != nil {
			verdicts[i] = v
		}
	}
	r.mu.RUnlock()
	r.add(&counts)
}

// deliver queues the n-byte packet at b[offset:] from the LAN for p. With
// GSO reads its descriptor is in front of it: a GSO peer takes both, any
// other peer gets a superpacket cut into finished packets.
func (r *Router) deliver(p *Peer, b []byte, offset, n int) Verdict {
	pkt := b[offset : offset+n]
	if !r.lanGSO {
		return p.enqueue(pkt)
	}
	if p.gso {
		return p.q.enqueueWith(b[offset-tun.GSOLen:offset], pkt)
	}
	g := tun.GetGSO(b, offset)
	if g.Kind == tun.GSONone {
		return p.q.enqueueWith(nil, pkt)
	}
	scratch := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(scratch)
	v := ToPeer
	err := tun.Segment(pkt, g, *scratch, func(seg []byte) {
		if sv := p.q.enqueueWith(nil, seg); sv != ToPeer {
			v = sv
		}
	})
	if err != nil {
		return DropMalformed
	}
	return v
}

// scratchPool holds buffers for cutting superpackets.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, tun.MaxPacketSize); return &b }}

func (r *Router) add(counts *[numCounters]uint32) {
	for i, n := range counts {
		if n != 0 {
			r.counters[i].Add(uint64(n))
		}
	}
}

// logDrop logs a dropped packet from p, rate-limited per peer.
func (r *Router) logDrop(p *Peer, v Verdict, f *flow, rule string) {
	level := slog.LevelInfo
	if v == DropSpoof {
		level = slog.LevelWarn
	}
	if r.logRate == 0 || !r.logger.Enabled(context.Background(), level) {
		return
	}
	suppressed, ok := p.log.Allow(r.now(), r.logRate, time.Second)
	if !ok {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("peer", p.name), slog.String("reason", v.String()))
	if f.src.IsValid() {
		attrs = append(attrs,
			slog.String("proto", protoName(f)),
			slog.String("src", netip.AddrPortFrom(f.src, f.sport).String()),
			slog.String("dst", netip.AddrPortFrom(f.dst, f.dport).String()))
	}
	if rule != "" {
		attrs = append(attrs, slog.String("rule", rule))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Uint64("suppressed", suppressed))
	}
	r.logger.LogAttrs(context.Background(), level, "packet dropped", attrs...)
}

func protoName(f *flow) string {
	if f.class != classIP {
		return className[f.class]
	}
	return fmt.Sprint(f.proto)
}

// Stats returns a snapshot of the counters since New.
func (r *Router) Stats() Stats {
	c := func(i int) uint64 { return r.counters[i].Load() }
	// A packet a queue accepted and dropped later moves from ToPeer to
	// Queue. Batches are counted after they are queued, so for a moment
	// the later drop may be ahead of the acceptance: never below zero.
	qd := c(queueDrops)
	toPeer := c(int(ToPeer))
	qd = min(qd, toPeer)
	return Stats{
		ToLAN:          c(int(ToLAN)),
		ToPeer:         toPeer - qd,
		Malformed:      c(int(DropMalformed)),
		LinkLocal:      c(int(DropLinkLocal)),
		Spoof:          c(int(DropSpoof)),
		ClientToClient: c(int(DropClientToClient)),
		Policy:         c(int(DropPolicy)),
		NoRoute:        c(int(DropNoRoute)),
		Queue:          c(int(DropQueue)) + qd,
		LANError:       c(lanError),
		Marked:         c(ecnMarked),
	}
}

// Peers returns how many peers are registered.
func (r *Router) Peers() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.peers)
}
