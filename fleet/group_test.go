package fleet

import (
	"fmt"
	"sync"
	"testing"

	"github.com/twoway/twoway/ipam"
)

// TestFailoverRegrantsInGroups: 200 users of a gateway that went away
// come back to another at once. Each keeps the addresses it had, and the
// gateway takes their holds in grouped transactions (far fewer raft
// entries than users), not one transaction per user, each waiting for the
// last: what made the reconnect storm slower than the users' handshake
// timeout (bench: BenchmarkReconnectStorm).
func TestFailoverRegrantsInGroups(t *testing.T) {
	cfg := ipam.Config{IPv4: pool4, IPv6: pool6}
	a, b := startGateway(t, "a", cfg), startGateway(t, "b", cfg)
	const n = 200
	had := make(map[string]ipam.Lease, n)
	for i := range n {
		id := fmt.Sprint("user", i)
		l := a.acquire(t, id)
		had[id] = l
		a.pool.Release(l)
	}
	b.sync(t)
	before := shared.CommittedIndex()
	var wg sync.WaitGroup
	got := make([]ipam.Lease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = b.pool.Acquire(fmt.Sprint("user", i), nil)
		}()
	}
	wg.Wait()
	entries := shared.CommittedIndex() - before
	for i := range n {
		id := fmt.Sprint("user", i)
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		if got[i].IPv4 != had[id].IPv4 || got[i].IPv6 != had[id].IPv6 {
			t.Errorf("%s came back with %v, had %v", id, got[i].Addrs(), had[id].Addrs())
		}
	}
	t.Logf("%d users re-held in %d raft entries", n, entries)
	if entries >= n/2 {
		t.Errorf("%d raft entries for %d re-holds: not grouped", entries, n)
	}
	// Each hold is in etcd under b's name.
	holds := keys(t, etcdClient(t), "ipam/hold/")
	if len(holds) != n {
		t.Errorf("%d holds in etcd, want %d", len(holds), n)
	}
	for k, v := range holds {
		if v != "b" {
			t.Errorf("%s held by %q, want b", k, v)
		}
	}
}
