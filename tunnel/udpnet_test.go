package tunnel

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// fakeUDP is an in-process UDP network for the UDP path's tests: binds
// attached to it exchange datagrams by address, with loss, a switch that
// blocks everything (a firewall), a tap that sees every datagram, and the
// means to move a bind to another source address (roaming).
type fakeUDP struct {
	mu      sync.Mutex
	binds   map[netip.AddrPort]*fakeBind
	loss    float64 // drop probability per datagram
	blocked bool
	tap     func(from, to netip.AddrPort, d []byte)
	delay   func(from, to netip.AddrPort) time.Duration // extra one-way delay, if set
	next    uint16                                      // next ephemeral port
	sent    atomic.Uint64
}

func newFakeUDP() *fakeUDP {
	return &fakeUDP{binds: make(map[netip.AddrPort]*fakeBind), next: 40000}
}

func (n *fakeUDP) setLoss(p float64) { n.mu.Lock(); n.loss = p; n.mu.Unlock() }
func (n *fakeUDP) block(b bool)      { n.mu.Lock(); n.blocked = b; n.mu.Unlock() }

// bind returns a bind that opens on host (the port is Open's).
func (n *fakeUDP) bind(host string) *fakeBind {
	return &fakeBind{net: n, host: netip.MustParseAddr(host)}
}

// deliver carries one datagram, unless lost or blocked.
func (n *fakeUDP) deliver(from, to netip.AddrPort, d []byte) {
	n.mu.Lock()
	dst, blocked, loss, tap, delay := n.binds[to], n.blocked, n.loss, n.tap, n.delay
	n.mu.Unlock()
	if tap != nil {
		tap(from, to, d)
	}
	if dst == nil || blocked || (loss > 0 && rand.Float64() < loss) {
		return
	}
	n.sent.Add(1)
	dg := fakeDatagram{from: from, d: append([]byte(nil), d...)}
	put := func() {
		select {
		case dst.rx <- dg:
		default: // a full socket buffer drops
		}
	}
	if delay != nil {
		if d := delay(from, to); d > 0 {
			time.AfterFunc(d, put)
			return
		}
	}
	put()
}

// setDelay delays datagrams from one host to another by d (0: none).
func (n *fakeUDP) setDelay(from, to netip.Addr, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay = func(f, t netip.AddrPort) time.Duration {
		if f.Addr() == from && t.Addr() == to {
			return d
		}
		return 0
	}
}

type fakeDatagram struct {
	from netip.AddrPort
	d    []byte
}

// fakeBind is a conn.Bind on fakeUDP.
type fakeBind struct {
	net  *fakeUDP
	host netip.Addr
	mu   sync.Mutex
	addr netip.AddrPort // guarded by mu
	rx   chan fakeDatagram
	done chan struct{}
	once sync.Once
}

type fakeEndpoint netip.AddrPort

func (e fakeEndpoint) ClearSrc()           {}
func (e fakeEndpoint) SrcToString() string { return "" }
func (e fakeEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e fakeEndpoint) DstToBytes() []byte  { b, _ := netip.AddrPort(e).MarshalBinary(); return b }
func (e fakeEndpoint) DstIP() netip.Addr   { return netip.AddrPort(e).Addr() }
func (e fakeEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func (b *fakeBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	n := b.net
	n.mu.Lock()
	if port == 0 {
		port = n.next
		n.next++
	}
	ap := netip.AddrPortFrom(b.host, port)
	if n.binds[ap] != nil {
		n.mu.Unlock()
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	b.addr = ap
	b.rx = make(chan fakeDatagram, 4096)
	b.done = make(chan struct{})
	n.binds[ap] = b
	n.mu.Unlock()
	return []conn.ReceiveFunc{b.receive}, port, nil
}

func (b *fakeBind) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	var d fakeDatagram
	select {
	case d = <-b.rx:
	case <-b.done:
		return 0, net.ErrClosed
	}
	k := 0
	for {
		sizes[k] = copy(bufs[k], d.d)
		eps[k] = fakeEndpoint(d.from)
		k++
		if k == len(bufs) {
			return k, nil
		}
		select {
		case d = <-b.rx:
		default:
			return k, nil
		}
	}
}

// moveTo gives the bind a new address, as a laptop moving to another
// network (or a NAT rebinding) would: what it sends comes from there, and
// only datagrams to there reach it.
func (b *fakeBind) moveTo(ap netip.AddrPort) {
	n := b.net
	n.mu.Lock()
	b.mu.Lock()
	delete(n.binds, b.addr)
	b.addr = ap
	n.binds[ap] = b
	b.mu.Unlock()
	n.mu.Unlock()
}

func (b *fakeBind) local() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

func (b *fakeBind) Close() error {
	b.once.Do(func() {
		n := b.net
		n.mu.Lock()
		if n.binds[b.addr] == b {
			delete(n.binds, b.addr)
		}
		n.mu.Unlock()
		if b.done != nil {
			close(b.done)
		}
	})
	return nil
}

func (b *fakeBind) SetMark(uint32) error { return nil }

func (b *fakeBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	to := netip.AddrPort(ep.(fakeEndpoint))
	from := b.local()
	for _, d := range bufs {
		b.net.deliver(from, to, d)
	}
	return nil
}

func (b *fakeBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return fakeEndpoint(ap), nil
}

func (b *fakeBind) BatchSize() int { return 16 }
