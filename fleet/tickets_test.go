package fleet

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twoway/twoway/ipam"
)

// TestTicketKeysShared: the gateways of a fleet see one set of session
// ticket keys, so a ticket from one opens on another; the set rotates
// once per period however many gateways notice it is due, and keeps at
// most keep keys.
func TestTicketKeysShared(t *testing.T) {
	pool := ipam.Config{IPv4: netip.MustParsePrefix("198.18.100.0/24")}
	const rotate, keep = 300 * time.Millisecond, 3
	var sets []*TicketKeys
	for _, name := range []string{"gw1", "gw2", "gw3"} {
		g := startGateway(t, name, pool)
		sets = append(sets, g.fleet.StartTicketKeys(rotate, keep))
	}
	// Wait until all three hold the same non-empty set.
	same := func() [][32]byte {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			a, b, c := sets[0].TicketKeys(), sets[1].TicketKeys(), sets[2].TicketKeys()
			if len(a) > 0 && len(a) == len(b) && len(b) == len(c) && a[0] == b[0] && b[0] == c[0] {
				return a
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateways disagree on the ticket keys: %d, %d, %d keys", len(a), len(b), len(c))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first := same()
	if len(first) != 1 {
		t.Fatalf("%d keys at start, want 1", len(first))
	}
	// Over several periods the set rotates, each period once: the keys
	// seen in front follow each other, and never more than keep are kept.
	fronts := map[[32]byte]bool{first[0]: true}
	for end := time.Now().Add(5 * rotate); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, s := range sets {
			ks := s.TicketKeys()
			if len(ks) > keep {
				t.Fatalf("%d keys kept, want at most %d", len(ks), keep)
			}
			fronts[ks[0]] = true
		}
	}
	cur := same()
	if len(cur) != keep {
		t.Errorf("%d keys after 5 periods, want %d", len(cur), keep)
	}
	// Three gateways over ~5 periods: about 5 rotations, not 15.
	if n := len(fronts); n < 3 || n > 10 {
		t.Errorf("%d distinct newest keys over 5 periods, want about 6", n)
	}
	if cur[0] == first[0] {
		t.Error("the keys never rotated")
	}
}
