package router

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/tun"
)

var (
	carol   = &pki.Identity{CommonName: "carol", Groups: []string{"eng"}, Serial: "c3"}
	carolV4 = netip.MustParseAddr("198.18.100.4")
)

// gsoLAN records which write path the router took.
type gsoLAN struct {
	recLAN
	mu  sync.Mutex
	gso [][]byte // descriptor and packet, per WriteGSO packet
}

func (l *gsoLAN) WriteGSO(bufs [][]byte, offset int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bufs {
		l.gso = append(l.gso, bytes.Clone(b[offset-tun.GSOLen:]))
	}
	return len(bufs), nil
}

func TestAddGSOPeer(t *testing.T) {
	// Client-to-client traffic or a LAN without WriteGSO rule it out.
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"client-to-client", Config{LAN: &gsoLAN{}, ClientToClient: true}},
		{"plain LAN", Config{LAN: &recLAN{}}},
	} {
		e := newEnv(t, tc.cfg)
		if _, err := e.r.AddGSOPeer(carol, []netip.Addr{carolV4}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: AddGSOPeer = %v, want ErrInvalidConfig", tc.name, err)
		}
	}

	lan := &gsoLAN{}
	e := newEnv(t, Config{LAN: lan})
	p, err := e.r.AddGSOPeer(carol, []netip.Addr{carolV4})
	if err != nil {
		t.Fatal(err)
	}
	// A superpacket from the GSO peer is checked like any packet (source,
	// policy) and written with its descriptor.
	ok, spoofed := tcp(carolV4, web, 443), tcp(aliceV4, web, 443)
	b := bufs(ok, spoofed)
	for _, x := range b {
		tun.PutGSO(x, tun.Offset, tun.GSO{Kind: tun.GSOTCP, Size: 1000})
	}
	v := make([]Verdict, 2)
	if err := e.r.FromPeer(p, b, tun.Offset, v); err != nil {
		t.Fatal(err)
	}
	if v[0] != ToLAN || v[1] != DropSpoof {
		t.Fatalf("verdicts %v, want [%v %v]", v, ToLAN, DropSpoof)
	}
	if len(lan.gso) != 1 || len(lan.take()) != 0 {
		t.Fatalf("%d packets through WriteGSO, want 1 and none through Write", len(lan.gso))
	}
	if g := tun.GetGSO(lan.gso[0], tun.GSOLen); g != (tun.GSO{Kind: tun.GSOTCP, Size: 1000}) || !bytes.Equal(lan.gso[0][tun.GSOLen:], ok) {
		t.Fatalf("written %+v", g)
	}
	// An ordinary peer's packets still take Write.
	if fromPeer(t, e.r, e.alice, tcp(aliceV4, web, 443)) != ToLAN || len(lan.take()) != 1 {
		t.Fatal("plain peer's packet did not go through Write")
	}
}
