package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

var _ LAN = (tun.Device)(nil) // the TUN device is what the gateway attaches

// Addresses: clients in 198.18.100.0/24 and 2001:db8:100::/64, LAN hosts in
// 198.19.0.0/16 and 2001:db8:200::/64.
var (
	aliceV4 = netip.MustParseAddr("198.18.100.2")
	aliceV6 = netip.MustParseAddr("2001:db8:100::2")
	bobV4   = netip.MustParseAddr("198.18.100.3")
	bobV6   = netip.MustParseAddr("2001:db8:100::3")

	web    = netip.MustParseAddr("198.19.0.10")
	web6   = netip.MustParseAddr("2001:db8:200::10")
	dns    = netip.MustParseAddr("198.19.0.53")
	dns6   = netip.MustParseAddr("2001:db8:200::53")
	secret = netip.MustParseAddr("198.19.0.66")
	bulk   = netip.MustParseAddr("198.19.1.7")
	other  = netip.MustParseAddr("203.0.113.9")
)

var (
	alice = &pki.Identity{CommonName: "alice", Groups: []string{"eng"}, Serial: "a1"}
	bob   = &pki.Identity{CommonName: "bob", Serial: "b2"}
)

// testPolicyConfig is the policy the tests run against.
var testPolicyConfig = policy.Config{
	Admit: policy.Admission{Identities: []string{"*"}},
	Rules: []policy.Rule{
		{Name: "no-secret", Identities: []string{"*"}, Action: "deny", Targets: []string{"198.19.0.66"}},
		{Name: "web", Groups: []string{"eng"}, Protocols: []string{"tcp"}, Targets: []string{"198.19.0.0/24:80,443", "[2001:db8:200::]/64:443"}},
		{Name: "dns", Identities: []string{"*"}, Protocols: []string{"udp"}, Targets: []string{"198.19.0.53:53", "[2001:db8:200::53]:53"}},
		{Name: "ping", Identities: []string{"*"}, Protocols: []string{"icmp"}, Targets: []string{"198.19.0.0/24", "2001:db8:200::/64"}},
		{Name: "bulk", Groups: []string{"eng"}, Protocols: []string{"udp"}, Targets: []string{"198.19.1.0/24"}},
		{Name: "gre", Groups: []string{"eng"}, Targets: []string{"198.19.2.0/24"}},
	},
}

func testPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(testPolicyConfig)
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	return p
}

// recLAN records what the router writes to the LAN.
type recLAN struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (l *recLAN) Write(bufs [][]byte, offset int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bufs {
		l.pkts = append(l.pkts, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}

func (l *recLAN) take() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pkts
	l.pkts = nil
	return p
}

// discardLAN counts packets and keeps nothing, for allocation tests and
// benchmarks.
type discardLAN struct{ n int }

func (l *discardLAN) Write(bufs [][]byte, offset int) (int, error) {
	l.n += len(bufs)
	return len(bufs), nil
}

// funcPolicy adapts a function to Policy.
type funcPolicy func(id *pki.Identity, t policy.Target) policy.Decision

func (f funcPolicy) Dial(id *pki.Identity, t policy.Target) policy.Decision { return f(id, t) }

// env is a router with alice and bob connected.
type env struct {
	r          *Router
	lan        *recLAN
	alice, bob *Peer
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	lan := &recLAN{}
	if cfg.LAN == nil {
		cfg.LAN = lan
	}
	if cfg.Policy == nil {
		cfg.Policy = testPolicy(t)
	}
	r, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := &env{r: r, lan: lan}
	e.alice = mustAddPeer(t, r, alice, aliceV4, aliceV6)
	e.bob = mustAddPeer(t, r, bob, bobV4, bobV6)
	t.Cleanup(r.Close)
	return e
}

func mustAddPeer(t testing.TB, r *Router, id *pki.Identity, addrs ...netip.Addr) *Peer {
	t.Helper()
	p, err := r.AddPeer(id, addrs)
	if err != nil {
		t.Fatalf("AddPeer(%s): %v", id.Name(), err)
	}
	return p
}

// bufs lays packets out the way the tunnel does: tun.Offset bytes of
// headroom in front of each.
func bufs(pkts ...[]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, tun.Offset+len(p), tun.Offset+max(len(p), 2048))
		copy(b[tun.Offset:], p)
		out[i] = b
	}
	return out
}

// fromPeer routes one packet and returns its verdict.
func fromPeer(t testing.TB, r *Router, p *Peer, pkt []byte) Verdict {
	t.Helper()
	v := make([]Verdict, 1)
	if err := r.FromPeer(p, bufs(pkt), tun.Offset, v); err != nil {
		t.Fatalf("FromPeer: %v", err)
	}
	return v[0]
}

func fromLAN(r *Router, pkt []byte) Verdict {
	v := make([]Verdict, 1)
	r.FromLAN(bufs(pkt), tun.Offset, v)
	return v[0]
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func udp(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	return tuntest.UDP(ap(src, sport), ap(dst, dport), []byte("payload"))
}

func tcp(src netip.Addr, dst netip.Addr, dport uint16) []byte {
	return tuntest.TCP(ap(src, 40000), ap(dst, dport), tuntest.TCPSegment{Flags: tuntest.SYN})
}

// withProto rewrites the protocol number of an IPv4 packet or the next
// header of an IPv6 packet without extension headers.
func withProto(pkt []byte, proto byte) []byte {
	pkt = slices.Clone(pkt)
	if pkt[0]>>4 == 4 {
		pkt[9] = proto
	} else {
		pkt[6] = proto
	}
	return pkt
}

// fragment4 turns an IPv4 packet into a fragment: offset in 8-byte units,
// more says whether more fragments follow; keep bytes of the original
// transport data are kept.
func fragment4(pkt []byte, offset uint16, more bool, keep int) []byte {
	ihl := int(pkt[0]&0x0f) * 4
	out := slices.Clone(pkt[:ihl+min(keep, len(pkt)-ihl)])
	v := offset & 0x1fff
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(out[6:], v)
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	return out
}

// ext6 inserts IPv6 extension headers (each a complete header whose first
// byte, the next header, is filled in here) between the fixed header and
// the upper layer of pkt, which must have none.
func ext6(pkt []byte, hdrs ...[]byte) []byte {
	upper := pkt[6]
	out := slices.Clone(pkt[:40])
	types := make([]byte, len(hdrs))
	for i, h := range hdrs {
		types[i] = h[0]
	}
	if len(hdrs) > 0 {
		out[6] = types[0]
	}
	for i, h := range hdrs {
		h = slices.Clone(h)
		if i+1 < len(hdrs) {
			h[0] = types[i+1]
		} else {
			h[0] = upper
		}
		out = append(out, h...)
	}
	out = append(out, pkt[40:]...)
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

// Extension headers for ext6; byte 0 is the header's own type, replaced by
// the next header when inserted.
func hopByHop() []byte { return []byte{protoHopByHop, 0, 1, 4, 0, 0, 0, 0} } // PadN
func destOpts() []byte { return []byte{protoDestOpts, 0, 1, 4, 0, 0, 0, 0} }
func routing(segmentsLeft byte) []byte {
	h := make([]byte, 24)
	h[0], h[1], h[2], h[3] = protoRouting, 2, 4, segmentsLeft
	return h
}
func fragHdr(offset uint16, more bool) []byte {
	h := []byte{protoFragment, 0, 0, 0, 0, 0, 0, 1}
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	return h
}

// logRecorder captures log records.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) attrs() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		m := map[string]string{"msg": r.Message, "level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}
