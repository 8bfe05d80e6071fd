package fleet

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/ipam"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSessionRegistryAndKick: gateways file their sessions for the whole
// fleet to see; a dead gateway's sessions vanish with its lease; a kick
// filed on one gateway reaches the others, which answer with how many
// sessions they ended.
func TestSessionRegistryAndKick(t *testing.T) {
	pool := ipam.Config{IPv4: netip.MustParsePrefix("198.18.100.0/24")}
	var mu sync.Mutex
	kicked := map[string][]string{} // gateway -> identities
	var gws []*gateway
	for _, name := range []string{"gw1", "gw2", "gw3"} {
		g := startGateway(t, name, pool)
		g.fleet.StartRegistry(func() []SessionRecord { return nil })
		g.fleet.WatchKicks(func(id string) int {
			mu.Lock()
			defer mu.Unlock()
			kicked[name] = append(kicked[name], id)
			if id == "alice" && name != "gw3" {
				return 1
			}
			return 0
		})
		gws = append(gws, g)
	}
	since := time.Now().Truncate(time.Second)
	gws[0].fleet.PutSession(SessionRecord{ID: "s1", Identity: "alice", Addresses: []string{"198.18.100.2/24"}, Since: since})
	gws[1].fleet.PutSession(SessionRecord{ID: "s2", Identity: "alice", Since: since})
	gws[2].fleet.PutSession(SessionRecord{ID: "s3", Identity: "bob", Since: since})
	ctx := context.Background()
	waitSessions := func(want int) []SessionRecord {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			all, err := gws[0].fleet.Sessions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) == want {
				return all
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d sessions in the registry, want %d: %+v", len(all), want, all)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	all := waitSessions(3)
	if all[0].Gateway != "gw1" || all[0].Identity != "alice" || !all[0].Since.Equal(since) || all[0].Addresses[0] != "198.18.100.2/24" {
		t.Errorf("first record %+v", all[0])
	}
	if all[2].Gateway != "gw3" || all[2].Identity != "bob" {
		t.Errorf("third record %+v", all[2])
	}

	counts, err := gws[2].fleet.Kick(ctx, "alice", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 3 || counts["gw1"] != 1 || counts["gw2"] != 1 || counts["gw3"] != 0 {
		t.Errorf("kick answers %v, want gw1:1 gw2:1 gw3:0", counts)
	}
	if left := keys(t, etcdClient(t), "kick"); len(left) != 0 {
		t.Errorf("kick requests left behind: %v", left)
	}

	// gw2 ends its session; gw3 dies: its session goes with its lease.
	gws[1].fleet.DeleteSession("s2")
	gws[2].fleet.noGoodbye = true
	gws[2].fleet.Stop()
	start := time.Now()
	all = waitSessions(1)
	t.Logf("a dead gateway's sessions left the registry after %v (lease TTL 2 s)", time.Since(start).Round(10*time.Millisecond))
	if all[0].ID != "s1" {
		t.Errorf("left: %+v", all)
	}
}

// TestLostLeaseRefilesSessions: a gateway whose lease is lost (revoked
// here; a quorum loss ends the keepalive the same way) files its sessions
// again under the new lease at once, not at the next refresh.
func TestLostLeaseRefilesSessions(t *testing.T) {
	g := startGateway(t, "gw1", ipam.Config{IPv4: netip.MustParsePrefix("198.18.100.0/24")})
	rec := SessionRecord{ID: "s1", Identity: "alice", Since: time.Now().Truncate(time.Second)}
	g.fleet.StartRegistry(func() []SessionRecord { return []SessionRecord{rec} })
	g.fleet.PutSession(rec)
	cli := etcdClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := g.fleet.sessionKey("gw1", "s1")
	var old clientv3.LeaseID
	for deadline := time.Now().Add(10 * time.Second); old == 0; {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			old = clientv3.LeaseID(resp.Kvs[0].Lease)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session is not in the registry")
		}
		time.Sleep(10 * time.Millisecond) // the registry writes in the background
	}
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != old {
			t.Logf("filed again under the new lease %v after the old one was revoked", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the session is not filed again 5 s after the lease was lost (refresh: every %v)", RefreshSessions)
		}
		time.Sleep(10 * time.Millisecond) // the keepalive notices, takes a lease, then refiles
	}
}
