package fleet

import (
	"context"
	"crypto/x509"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/pki/pkitest"
)

// TestCRLReachesEveryGateway: a CRL published to the fleet reaches every
// gateway's watch within a second (measured), a newer one replaces it, and
// an older or equal one is refused.
func TestCRLReachesEveryGateway(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice")
	type seen struct {
		gw   string
		crls []*x509.RevocationList
		at   time.Time
	}
	got := make(chan seen, 64)
	for _, name := range []string{"gw1", "gw2", "gw3"} {
		g := startGateway(t, name, ipam.Config{IPv4: netip.MustParsePrefix("198.18.100.0/24")})
		g.fleet.WatchCRLs(func(crls []*x509.RevocationList) { got <- seen{name, crls, time.Now()} })
	}
	// Each watch applies the (empty) set it starts with.
	for range 3 {
		if s := <-got; len(s.crls) != 0 {
			t.Fatalf("%s started with %d CRLs", s.gw, len(s.crls))
		}
	}
	cli := etcdClient(t)
	ctx := context.Background()
	waitAll := func(number int64, start time.Time) {
		t.Helper()
		reached := map[string]time.Duration{}
		deadline := time.After(5 * time.Second)
		for len(reached) < 3 {
			select {
			case s := <-got:
				if len(s.crls) == 1 && s.crls[0].Number.Int64() == number {
					reached[s.gw] = s.at.Sub(start)
				}
			case <-deadline:
				t.Fatalf("CRL %d reached only %v within 5 s", number, reached)
			}
		}
		t.Logf("CRL %d reached the gateways after %v", number, reached)
		for gw, d := range reached {
			if d > time.Second {
				t.Errorf("CRL %d reached %s after %v, want under 1 s", number, gw, d)
			}
		}
	}

	start := time.Now()
	if err := PublishCRL(ctx, cli, testPrefix(t), h.ClientCA.CRL(t, 2, alice.Cert)); err != nil {
		t.Fatal(err)
	}
	waitAll(2, start)
	for _, n := range []int64{2, 1} {
		if err := PublishCRL(ctx, cli, testPrefix(t), h.ClientCA.CRL(t, n)); !errors.Is(err, ErrCRLNotNewer) {
			t.Fatalf("publishing CRL %d after 2: %v, want ErrCRLNotNewer", n, err)
		}
	}
	start = time.Now()
	if err := PublishCRL(ctx, cli, testPrefix(t), h.ClientCA.CRL(t, 3)); err != nil {
		t.Fatal(err)
	}
	waitAll(3, start)
}
