package fleet

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
	"github.com/twoway/twoway/tunnel"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The reconnect-storm benchmark's knobs (go test ... -args -storm.clients=200).
var (
	stormClients = flag.Int("storm.clients", 2000, "BenchmarkReconnectStorm: VPN clients on the gateway that dies")
	stormModes   = flag.String("storm.modes", "resume,full", "BenchmarkReconnectStorm: runs, comma-separated: resume (shared session tickets), full (no resumption)")
	stormTTL     = flag.Duration("storm.lease-ttl", DefaultLeaseTTL, "BenchmarkReconnectStorm: the gateways' fleet lease TTL")
	// client.toml's [reconnect] defaults (package config, which imports
	// this one): a client whose session broke waits half to all of
	// min_backoff before its next attempt, which spreads a storm.
	stormMinBackoff = flag.Duration("storm.min-backoff", time.Second, "BenchmarkReconnectStorm: the clients' reconnect.min_backoff")
	stormMaxBackoff = time.Minute
)

// BenchmarkReconnectStorm: three gateways of a fleet on the shared
// three-member etcd cluster, each a real tunnel.Server in VPN mode whose
// pool keeps its leases in the fleet's store, with the session registry and
// (in the resume run) ticket keys shared through etcd, as the daemon wires
// them. -storm.clients VPN clients (real tunnel.Client, one certificate and
// identity each, gateways listed gw1 first, then gw2 and gw3 in turns)
// connect to gw1. Then gw1 crashes: its etcd client stops without revoking
// its lease (noGoodbye, as a killed process: the lease runs out after
// LeaseTTL), and its listener and every TCP connection are closed with
// SO_LINGER 0, so the clients get a reset, as from a killed process's
// kernel. The clock runs until every client has its VPN up again on gw2 or
// gw3, and each must have the addresses it had. etcd's load is the raft
// entries committed (Cluster.CommittedIndex) and the requests its members
// handled (gRPC server metrics, all members together), from the crash until
// gw1's lease expired and the writes stopped.
//
// Run it once per mode, on a quiet machine:
//
//	go test -run '^$' -bench ReconnectStorm -benchtime 1x -timeout 30m ./fleet/ -args -storm.clients=2000
func BenchmarkReconnectStorm(b *testing.B) {
	var rows []stormResult
	for mode := range strings.SplitSeq(*stormModes, ",") {
		if mode != "resume" && mode != "full" {
			b.Fatalf("-storm.modes: %q, want resume or full", mode)
		}
		r := runStorm(b, *stormClients, mode == "resume")
		rows = append(rows, r)
		b.ReportMetric(r.total.Seconds(), mode+"-all-back-s")
		b.ReportMetric(r.p99.Seconds(), mode+"-p99-s")
		b.ReportMetric(r.stormEntries/float64(r.n), mode+"-etcd-writes/session")
	}
	fmt.Println()
	fmt.Printf("Reconnect storm: %d VPN clients from a crashed gateway onto two others (fleet lease TTL %v; %s)\n\n",
		*stormClients, *stormTTL, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| run | all back (s) | p50 (s) | p99 (s) | resumed | same addresses | handshakes refused | address commits on gw2+gw3, mean (ms) | etcd raft entries per session: connect / storm | etcd requests per session in the storm |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %.2f | %.2f | %.2f | %d/%d | %d/%d | %d | %d, %.1f | %.2f / %.2f | %s |\n", r.mode, r.total.Seconds(), r.p50.Seconds(), r.p99.Seconds(),
			r.resumed, r.n, r.same, r.n, r.refused, r.commits, r.commitBusy.Seconds()*1000/float64(max(1, r.commits)),
			r.connectEntries/float64(r.n), r.stormEntries/float64(r.n), r.requests)
	}
	fmt.Println()
}

type stormResult struct {
	mode                         string
	n                            int
	total, p50, p99              time.Duration
	resumed, same                int
	connectEntries, stormEntries float64
	requests                     string // per session, by method
	refused                      int    // handshakes the survivors refused in the storm
	commits                      int    // address store Commits on gw2 and gw3 until all were back
	commitBusy                   time.Duration
	refusedWhat                  string
}

// addrPort matches the addresses in a refusal's error, which would make
// every one unique.
var addrPort = regexp.MustCompile(`[0-9.]+:[0-9]+`)

// stormGateway is one gateway of the benchmark's fleet.
type stormGateway struct {
	fleet *Fleet
	srv   *tunnel.Server
	ln    *crashListener
	lan   *tuntest.Device
	store *timedStore
}

// timedStore is a gateway's address store that times its Commits: an
// etcd transaction and the wait for the watch to deliver it. The Pool
// makes them one at a time, so their sum is how long address grants kept
// the gateway's pool busy.
type timedStore struct {
	ipam.Store
	mu      sync.Mutex
	commits int
	busy    time.Duration
}

func (s *timedStore) Commit(ch ipam.Change) error {
	start := time.Now()
	err := s.Store.Commit(ch)
	s.mu.Lock()
	s.commits++
	s.busy += time.Since(start)
	s.mu.Unlock()
	return err
}

// take returns the counters and resets them.
func (s *timedStore) take() (int, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, d := s.commits, s.busy
	s.commits, s.busy = 0, 0
	return n, d
}

// stormCreds is a fixed certificate and verifier.
type stormCreds struct {
	cert tls.Certificate
	v    *pki.Verifier
}

func (c *stormCreds) Certificate() *tls.Certificate { return &c.cert }
func (c *stormCreds) Verifier() *pki.Verifier       { return c.v }

// crashListener remembers every connection it accepted, so that crash can
// reset them all.
type crashListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *crashListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// crash closes the listener, then every accepted connection with SO_LINGER
// 0: the peers get a reset at once, as when the kernel cleans up after a
// killed process.
func (l *crashListener) crash() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// stormClient is what one client saw.
type stormClient struct {
	mu      sync.Mutex
	remote  string
	resumed bool
	addrs   []netip.Prefix
	up      time.Time // VPN up
	ups     chan struct{}
	lastErr error // the last connect error or session loss, for a report
}

func (sc *stormClient) failed(err error) {
	sc.mu.Lock()
	sc.lastErr = err
	sc.mu.Unlock()
}

type nopConfigurator struct{}

func (nopConfigurator) Apply(context.Context, string, tun.Config) (func() error, error) {
	return func() error { return nil }, nil
}

func runStorm(b *testing.B, n int, resume bool) stormResult {
	mode := map[bool]string{true: "resume", false: "full"}[resume]
	res := stormResult{mode: mode, n: n}
	quiet := slog.New(slog.DiscardHandler)
	prefix := fmt.Sprintf("/bench/storm-%s-%d/", mode, time.Now().UnixNano())

	// One client CA, n client certificates.
	start := time.Now()
	h := pkitest.NewHierarchy(b)
	srvLeaf := h.ServerCA.Server(b, "127.0.0.1")
	srvCreds := &stormCreds{cert: srvLeaf.TLSCertificate(), v: pkitest.Verifier(b, h.ClientBundle())}
	cliVerifier := pkitest.Verifier(b, h.ServerBundle())
	creds := make([]*stormCreds, n)
	for i := range creds {
		creds[i] = &stormCreds{cert: h.ClientCA.Client(b, fmt.Sprintf("user%05d", i), "bench").TLSCertificate(), v: cliVerifier}
	}
	b.Logf("%s: %d client certificates in %v", mode, n, time.Since(start).Round(time.Millisecond))

	pol, err := policy.New(policy.Config{Admit: policy.Admission{Groups: []string{"bench"}}})
	if err != nil {
		b.Fatal(err)
	}
	var refusedMu sync.Mutex
	refused := make(map[string]int) // stage: error -> count
	takeRefused := func() (n int, what string) {
		refusedMu.Lock()
		defer refusedMu.Unlock()
		var parts []string
		for k, v := range refused {
			n += v
			parts = append(parts, fmt.Sprintf("%d x %s", v, k))
		}
		clear(refused)
		slices.Sort(parts)
		return n, strings.Join(parts, "; ")
	}
	pool := ipam.Config{IPv4: netip.MustParsePrefix("198.18.0.0/20"), IPv6: netip.MustParsePrefix("2001:db8:15::/64")}
	startGW := func(name string) *stormGateway {
		f, err := New(Config{Endpoints: shared.Endpoints, Name: name, Prefix: prefix, LeaseTTL: *stormTTL}, quiet)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		store := &timedStore{Store: f.Addresses()}
		p, err := ipam.NewWithStore(pool, store, quiet)
		if err != nil {
			b.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		g := &stormGateway{fleet: f, ln: &crashListener{Listener: l}, lan: tuntest.New(tuntest.Options{Name: name}), store: store}
		cfg := tunnel.ServerConfig{
			Listener: g.ln, Credentials: srvCreds, Policy: pol,
			// Off: every client here comes from 127.0.0.1, where a
			// fleet's users come from as many addresses, and the
			// per-source failure budget would treat 2,000 users as one
			// attacker. The other limits keep their defaults, also the
			// per-source bound on connections waiting for their
			// ClientHello (MaxHandshakes/2 = 128), which this one
			// source can reach: such refusals are counted.
			HandshakeRate:          0,
			MaxSessionsPerIdentity: tunnel.DefaultMaxSessionsPerIdentity,
			VPN:                    &tunnel.ServerVPN{Device: g.lan, Pool: p, MTU: 1400},
			NoResumption:           !resume,
		}
		if resume {
			cfg.TicketKeys = f.StartTicketKeys(tunnel.RotateTicketKeys, tunnel.KeepTicketKeys)
		}
		// The session registry, as daemon.startFleet files it.
		f.StartRegistry(func() []SessionRecord {
			var out []SessionRecord
			for _, si := range g.srv.Sessions() {
				out = append(out, stormRecord(si))
			}
			return out
		})
		cfg.OnSession = func(si tunnel.SessionInfo) { f.PutSession(stormRecord(si)) }
		cfg.OnSessionEnd = func(si tunnel.SessionInfo, _ error) { f.DeleteSession(si.ID) }
		cfg.OnRefuse = func(r tunnel.Refusal) {
			refusedMu.Lock()
			refused[r.Stage+": "+addrPort.ReplaceAllString(fmt.Sprint(r.Err), "ADDR")]++
			refusedMu.Unlock()
		}
		if g.srv, err = tunnel.NewServer(cfg, quiet); err != nil {
			b.Fatal(err)
		}
		if err := g.srv.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		return g
	}
	gws := []*stormGateway{startGW("gw1"), startGW("gw2"), startGW("gw3")}
	defer func() {
		for _, g := range gws {
			g.srv.Stop()
			g.fleet.Stop()
		}
	}()
	addr := func(i int) string { return gws[i].srv.Addr().String() }

	// The clients, all on gw1 first.
	clients := make([]*stormClient, n)
	tcs := make([]*tunnel.Client, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range tcs {
			if c != nil {
				wg.Go(c.Stop)
			}
		}
		wg.Wait()
	}()
	idx0, req0 := shared.CommittedIndex(), etcdRequests(b)
	start = time.Now()
	for i := range n {
		sc := &stormClient{ups: make(chan struct{}, 4)}
		clients[i] = sc
		order := []string{addr(0), addr(1), addr(2)}
		if i%2 == 1 {
			order[1], order[2] = order[2], order[1]
		}
		c, err := tunnel.NewClient(tunnel.ClientConfig{
			Endpoints: order, ServerName: "127.0.0.1", Credentials: creds[i],
			BackoffMin: *stormMinBackoff, BackoffMax: stormMaxBackoff,
			OnConnectError: sc.failed, OnDisconnect: sc.failed,
			OnSession: func(si tunnel.SessionInfo) {
				sc.mu.Lock()
				defer sc.mu.Unlock()
				sc.remote, sc.resumed = si.Remote.String(), si.TLS.DidResume
				sc.addrs = nil
				if si.VPN != nil {
					sc.addrs = slices.Clone(si.VPN.Addresses)
				} else {
					// The client stays on such a session, VPN or not:
					// waitUps names it if it never gets one.
					sc.lastErr = fmt.Errorf("a session on %s without a VPN address", si.Remote)
				}
			},
			VPN: &tunnel.ClientVPN{
				Device:       tuntest.New(tuntest.Options{Name: "tw", BatchSize: 1, Queue: 4}),
				Configurator: nopConfigurator{},
				OnUp: func(tun.Config) {
					sc.mu.Lock()
					sc.up = time.Now()
					sc.mu.Unlock()
					sc.ups <- struct{}{}
				},
			},
		}, quiet)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		tcs[i] = c
		// In waves, so that all land on gw1 despite the per-source
		// bound; this phase is not what is measured.
		if (i+1)%100 == 0 || i == n-1 {
			waitUps(b, clients[i/100*100:i+1], 5*time.Minute)
		}
	}
	b.Logf("%s: %d clients up on gw1 in %v", mode, n, time.Since(start).Round(time.Millisecond))
	if k, what := takeRefused(); k > 0 {
		b.Logf("%s: connect: %d handshakes refused: %s", mode, k, what)
	}
	before := make([][]netip.Prefix, n)
	for i, sc := range clients {
		sc.mu.Lock()
		if sc.remote != addr(0) {
			b.Fatalf("client %d on %s, want gw1 at %s", i, sc.remote, addr(0))
		}
		before[i] = sc.addrs
		sc.mu.Unlock()
	}
	// The registry's queue empties and the writes stop.
	quiesce(b)
	idx1, req1 := shared.CommittedIndex(), etcdRequests(b)
	res.connectEntries = float64(idx1 - idx0)
	b.Logf("%s: connect: %d raft entries, requests %v", mode, idx1-idx0, diffRequests(req1, req0))

	for _, g := range gws {
		g.store.take()
	}
	// gw1 dies.
	crashed := time.Now()
	gws[0].fleet.noGoodbye = true
	gws[0].fleet.Stop()
	gws[0].ln.crash()
	waitUps(b, clients, 5*time.Minute)
	var took []time.Duration
	for i, sc := range clients {
		sc.mu.Lock()
		switch {
		case sc.remote == addr(0):
			b.Errorf("client %d came back on gw1, which is dead", i)
		case slices.Equal(sc.addrs, before[i]):
			res.same++
		case i-res.same < 5:
			b.Logf("client %d: addresses %v, had %v", i, sc.addrs, before[i])
		}
		if sc.resumed {
			res.resumed++
		}
		took = append(took, sc.up.Sub(crashed))
		sc.mu.Unlock()
	}
	res.refused, res.refusedWhat = takeRefused()
	for _, g := range gws[1:] {
		k, busy := g.store.take()
		res.commits += k
		res.commitBusy += busy
	}
	slices.Sort(took)
	res.total = took[len(took)-1]
	res.p50 = took[len(took)/2]
	res.p99 = took[min(len(took)-1, len(took)*99/100)]
	b.Logf("%s: all %d back in %v (p50 %v, p99 %v); %d resumed, %d same addresses; %d handshakes refused: %s", mode, n,
		res.total.Round(time.Millisecond), res.p50.Round(time.Millisecond), res.p99.Round(time.Millisecond), res.resumed, res.same,
		res.refused, res.refusedWhat)
	b.Logf("%s: gw2 and gw3 made %d address commits, %v each on average (%v in all)", mode, res.commits,
		(res.commitBusy / time.Duration(max(1, res.commits))).Round(10*time.Microsecond), res.commitBusy.Round(time.Millisecond))
	if res.same != n {
		b.Errorf("%d of %d clients kept their addresses", res.same, n)
	}

	// Until gw1's lease ran out (its holds and sessions vanish with it)
	// and the survivors' registry writes are done.
	polls := waitLeaseGone(b, prefix+"ipam/hold/", "/gw1", crashed.Add(*stormTTL+30*time.Second))
	quiesce(b)
	idx2, req2 := shared.CommittedIndex(), etcdRequests(b)
	res.stormEntries = float64(idx2 - idx1)
	d := diffRequests(req2, req1)
	d["Range"] -= float64(polls) // the benchmark's own reads
	b.Logf("%s: storm: %d raft entries, requests %v", mode, idx2-idx1, d)
	var parts []string
	for _, m := range []string{"Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseRevoke", "Range"} {
		if d[m] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", m, d[m]/float64(n)))
		}
	}
	res.requests = strings.Join(parts, ", ")
	return res
}

// stormRecord is a session's registry entry, as daemon.sessionRecord
// makes it.
func stormRecord(si tunnel.SessionInfo) SessionRecord {
	r := SessionRecord{ID: si.ID, Since: si.Established}
	if si.Peer != nil {
		r.Identity, r.Issuer, r.Serial, r.Groups = si.Peer.Name(), si.Peer.Issuer, si.Peer.Serial, si.Peer.Groups
	}
	if si.Remote != nil {
		r.Remote = si.Remote.String()
	}
	if si.VPN != nil {
		for _, a := range si.VPN.Addresses {
			r.Addresses = append(r.Addresses, a.String())
		}
	}
	return r
}

// waitUps waits for one VPN-up from every client. When some are not up
// within limit it fails, naming them, with every goroutine's stack in a
// file.
func waitUps(b *testing.B, clients []*stormClient, limit time.Duration) {
	b.Helper()
	deadline := time.After(limit)
	for i, sc := range clients {
		select {
		case <-sc.ups:
		case <-deadline:
			var late []string
			for j, sc := range clients[i:] {
				if len(sc.ups) == 0 {
					sc.mu.Lock()
					late = append(late, fmt.Sprintf("#%d (last error: %v)", i+j, sc.lastErr))
					sc.mu.Unlock()
				}
			}
			dump := "not written"
			if f, err := os.CreateTemp("", "fleetstorm-goroutines-*.txt"); err == nil {
				pprof.Lookup("goroutine").WriteTo(f, 2)
				f.Close()
				dump = f.Name()
			}
			b.Fatalf("%d clients not up within %v (goroutines: %s): %s", len(late), limit, dump, strings.Join(late[:min(len(late), 10)], ", "))
		}
	}
}

// quiesce waits until etcd has committed nothing for a second.
func quiesce(b *testing.B) {
	b.Helper()
	last, since := shared.CommittedIndex(), time.Now()
	for deadline := time.Now().Add(2 * time.Minute); time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			b.Fatal("etcd still busy after 2 minutes")
		}
		time.Sleep(100 * time.Millisecond) // sampling; there is nothing to wait on
		if idx := shared.CommittedIndex(); idx != last {
			last, since = idx, time.Now()
		}
	}
}

// waitLeaseGone waits until no key under prefix ends in suffix. It
// returns how many requests it made.
func waitLeaseGone(b *testing.B, prefix, suffix string, deadline time.Time) (polls int) {
	b.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: shared.Endpoints, DialTimeout: 5 * time.Second, Logger: zapLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		polls++
		if err != nil {
			b.Fatal(err)
		}
		left := 0
		for _, kv := range resp.Kvs {
			if strings.HasSuffix(string(kv.Key), suffix) {
				left++
			}
		}
		if left == 0 {
			return polls
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d keys *%s still under %s", left, suffix, prefix)
		}
		time.Sleep(200 * time.Millisecond) // polling etcd: a watch would count as load too
	}
}

// etcdRequests returns the unary requests the in-process etcd members have
// handled so far, by method: etcd's gRPC server metrics, which every member
// in this process shares.
func etcdRequests(b *testing.B) map[string]float64 {
	b.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var method, typ string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "grpc_method":
					method = l.GetValue()
				case "grpc_type":
					typ = l.GetValue()
				}
			}
			if typ == "unary" {
				out[method] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func diffRequests(now, then map[string]float64) map[string]float64 {
	d := make(map[string]float64)
	for k, v := range now {
		if v-then[k] > 0 {
			d[k] = v - then[k]
		}
	}
	return d
}
