package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/pki"
)

// fakeSource hands out whatever status the test sets.
type fakeSource struct {
	mu sync.Mutex
	st control.Status
}

func (f *fakeSource) Status() control.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeSource) set(st control.Status) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func start(t *testing.T, src Source) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln, Source: src, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, "http://" + s.Addr().String() + "/metrics"
}

func status() control.Status {
	return control.Status{
		Role: config.RoleServer, Version: "1.2.3",
		Started: time.Unix(1780000000, 0),
		Sessions: []control.Session{
			{ID: "a", Identity: "alice", Streams: 3},
			{ID: "b", Identity: "bob", Streams: 1},
		},
		Totals: control.Totals{
			BytesIn: 1000, BytesOut: 2500, PacketsIn: 7, PacketsOut: 9, StreamsOpened: 42,
			Dropped: map[string]uint64{"policy": 5, "spoof": 2}, ECNMarked: 11,
			UDPIn: 300, UDPOut: 400, UDPDropped: map[string]uint64{"auth": 3, "replay": 1}, UDPRoamed: 2,
		},
		Certificates: []control.Certificate{
			{Which: control.CertOwn, Subject: "gw.example", Serial: "1a", NotAfter: now.Add(10 * 24 * time.Hour)},
			{Which: control.CertChain, Subject: "server CA", Serial: "2b", NotAfter: now.Add(100 * 24 * time.Hour)},
			{Which: control.CertCA, Subject: "root", Serial: "3c", NotAfter: now.Add(-time.Hour)},
			{Which: control.CertCA, Subject: "root", Serial: "3c", NotAfter: now.Add(-time.Hour)}, // listed twice
		},
		CRLs: []control.CRL{
			{Issuer: "client CA", Number: "7", NextUpdate: now.Add(-2 * time.Hour), Stale: true},
			{Issuer: "sub CA", Number: "2", NextUpdate: now.Add(48 * time.Hour)},
			{Issuer: "old CA", Number: "1"}, // no next update: no series
		},
	}
}

func TestScrapeSnapshot(t *testing.T) {
	src := &fakeSource{st: status()}
	_, url := start(t, src)
	want := `
# HELP twoway_info Always 1; the labels say what is running.
# TYPE twoway_info gauge
twoway_info{role="server",version="1.2.3"} 1
# HELP twoway_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE twoway_start_time_seconds gauge
twoway_start_time_seconds 1.78e+09
# HELP twoway_sessions Established sessions.
# TYPE twoway_sessions gauge
twoway_sessions 2
# HELP twoway_streams_open Data streams open now, over all sessions.
# TYPE twoway_streams_open gauge
twoway_streams_open 4
# HELP twoway_streams_opened_total Data streams opened since start.
# TYPE twoway_streams_opened_total counter
twoway_streams_opened_total 42
# HELP twoway_bytes_total Bytes carried for peers; in is received from them, out sent to them.
# TYPE twoway_bytes_total counter
twoway_bytes_total{direction="in"} 1000
twoway_bytes_total{direction="out"} 2500
# HELP twoway_packets_total VPN packets carried for peers; in is received from them, out sent to them.
# TYPE twoway_packets_total counter
twoway_packets_total{direction="in"} 7
twoway_packets_total{direction="out"} 9
# HELP twoway_packets_dropped_total VPN packets dropped, by reason (policy, spoof, queue, ...).
# TYPE twoway_packets_dropped_total counter
twoway_packets_dropped_total{reason="policy"} 5
twoway_packets_dropped_total{reason="spoof"} 2
# HELP twoway_packets_ecn_marked_total VPN packets the packet queues (a gateway's per client, a client's outbound) marked CE (ECN) instead of dropping them.
# TYPE twoway_packets_ecn_marked_total counter
twoway_packets_ecn_marked_total 11
# HELP twoway_udp_datagrams_total Datagrams of the VPN's UDP path: sent (out) and received and authenticated (in).
# TYPE twoway_udp_datagrams_total counter
twoway_udp_datagrams_total{direction="in"} 300
twoway_udp_datagrams_total{direction="out"} 400
# HELP twoway_udp_dropped_total Datagrams refused before or in authentication, by reason.
# TYPE twoway_udp_dropped_total counter
twoway_udp_dropped_total{reason="auth"} 3
twoway_udp_dropped_total{reason="replay"} 1
# HELP twoway_udp_roamed_total Times a gateway followed a client's authenticated UDP datagrams to a new address.
# TYPE twoway_udp_roamed_total counter
twoway_udp_roamed_total 2
# HELP twoway_certificate_expiry_seconds Seconds until a certificate the daemon depends on expires (negative once expired); which is own, chain or ca.
# TYPE twoway_certificate_expiry_seconds gauge
twoway_certificate_expiry_seconds{serial="1a",subject="gw.example",which="own"} 864000
twoway_certificate_expiry_seconds{serial="2b",subject="server CA",which="chain"} 8.64e+06
twoway_certificate_expiry_seconds{serial="3c",subject="root",which="ca"} -3600
# HELP twoway_crl_next_update_seconds Seconds until a revocation list in use is due to be replaced (negative once stale).
# TYPE twoway_crl_next_update_seconds gauge
twoway_crl_next_update_seconds{issuer="client CA",number="7"} -7200
twoway_crl_next_update_seconds{issuer="sub CA",number="2"} 172800
`
	err := testutil.ScrapeAndCompare(url, strings.NewReader(want),
		"twoway_info", "twoway_start_time_seconds", "twoway_sessions", "twoway_streams_open",
		"twoway_streams_opened_total", "twoway_bytes_total", "twoway_packets_total",
		"twoway_packets_dropped_total", "twoway_packets_ecn_marked_total", "twoway_udp_datagrams_total",
		"twoway_udp_dropped_total", "twoway_udp_roamed_total", "twoway_certificate_expiry_seconds", "twoway_crl_next_update_seconds")
	if err != nil {
		t.Fatal(err)
	}

	// The next scrape reads a fresh snapshot.
	st := status()
	st.Sessions = st.Sessions[:1]
	st.Totals.BytesOut = 9000
	src.set(st)
	want = `
# HELP twoway_sessions Established sessions.
# TYPE twoway_sessions gauge
twoway_sessions 1
# HELP twoway_bytes_total Bytes carried for peers; in is received from them, out sent to them.
# TYPE twoway_bytes_total counter
twoway_bytes_total{direction="in"} 1000
twoway_bytes_total{direction="out"} 9000
`
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "twoway_sessions", "twoway_bytes_total"); err != nil {
		t.Fatal(err)
	}

	// A fleet gateway: its link to etcd and what store_unreachable did.
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(""), "twoway_fleet_etcd_reachable"); err != nil {
		t.Fatalf("a lone gateway reports a fleet link: %v", err)
	}
	st.Fleet = &control.Fleet{Name: "gw1", Reachable: false, Refused: 4, ServedCached: 1}
	src.set(st)
	want = `
# HELP twoway_fleet_etcd_reachable 1 while the fleet's etcd renews this gateway's lease and answers its requests, else 0 (fleet gateways only).
# TYPE twoway_fleet_etcd_reachable gauge
twoway_fleet_etcd_reachable{gateway="gw1"} 0
# HELP twoway_fleet_store_unreachable_total VPN address requests met while etcd was unreachable, by what [fleet] store_unreachable made of them (refused, served_cached).
# TYPE twoway_fleet_store_unreachable_total counter
twoway_fleet_store_unreachable_total{outcome="refused"} 4
twoway_fleet_store_unreachable_total{outcome="served_cached"} 1
`
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "twoway_fleet_etcd_reachable", "twoway_fleet_store_unreachable_total"); err != nil {
		t.Fatal(err)
	}
}

func TestRenewalEvents(t *testing.T) {
	s, url := start(t, &fakeSource{st: status()})
	s.ObserveRenewal("renewed")
	s.ObserveRenewal("renewed")
	s.ObserveRenewal("refused")
	want := `
# HELP twoway_renewals_total Client certificate renewals at a gateway (over a session or EST), by outcome: renewed, refused (the client's certificate or request), failed (the gateway's CA).
# TYPE twoway_renewals_total counter
twoway_renewals_total{outcome="refused"} 1
twoway_renewals_total{outcome="renewed"} 2
`
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "twoway_renewals_total"); err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeEvents(t *testing.T) {
	s, url := start(t, &fakeSource{st: status()})
	want := `
# HELP twoway_handshakes_total Connection attempts by outcome; refusals by stage (rate, capacity, tls, verify, alpn, hello, admit) and, for certificate failures, the check that failed.
# TYPE twoway_handshakes_total counter
twoway_handshakes_total{outcome="accepted",reason="",stage=""} 0
`
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "twoway_handshakes_total"); err != nil {
		t.Fatalf("before any event: %v", err)
	}

	s.ObserveAccepted()
	s.ObserveAccepted()
	s.ObserveRefusal("verify", fmt.Errorf("handshake: %w", &pki.VerifyError{Check: "revocation", Subject: "mallory", Err: pki.ErrRevoked}))
	s.ObserveRefusal("verify", &pki.VerifyError{Check: "validity", Err: pki.ErrExpired})
	s.ObserveRefusal("verify", &pki.VerifyError{Check: "validity", Err: pki.ErrExpired})
	s.ObserveRefusal("rate", errors.New("too many handshakes"))
	s.ObserveRefusal("admit", errors.New("default deny"))
	s.ObserveRefusal("revalidate", &pki.VerifyError{Check: "revocation", Err: pki.ErrRevoked})
	s.ObserveRefusal("revalidate", errors.New("policy no longer admits"))

	want = `
# HELP twoway_handshakes_total Connection attempts by outcome; refusals by stage (rate, capacity, tls, verify, alpn, hello, admit) and, for certificate failures, the check that failed.
# TYPE twoway_handshakes_total counter
twoway_handshakes_total{outcome="accepted",reason="",stage=""} 2
twoway_handshakes_total{outcome="refused",reason="",stage="admit"} 1
twoway_handshakes_total{outcome="refused",reason="",stage="rate"} 1
twoway_handshakes_total{outcome="refused",reason="revocation",stage="verify"} 1
twoway_handshakes_total{outcome="refused",reason="validity",stage="verify"} 2
# HELP twoway_sessions_revoked_total Live sessions closed because a re-check after a reload failed, by reason (the failed check, or policy).
# TYPE twoway_sessions_revoked_total counter
twoway_sessions_revoked_total{reason="policy"} 1
twoway_sessions_revoked_total{reason="revocation"} 1
`
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "twoway_handshakes_total", "twoway_sessions_revoked_total"); err != nil {
		t.Fatal(err)
	}
}

func TestOwnRegistryOnly(t *testing.T) {
	_, url := start(t, &fakeSource{st: status()})
	body := get(t, url)
	// Nothing from the global default registry (go_*, process_*) unless
	// asked for.
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "twoway_") {
			t.Fatalf("foreign series in the exposition: %q", line)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln, Source: &fakeSource{st: status()}, Process: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if body := get(t, "http://"+s.Addr().String()+"/metrics"); !strings.Contains(body, "\ngo_goroutines ") {
		t.Fatal("Process: true did not add the Go collector")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(data)
}

func TestOnlyMetricsPath(t *testing.T) {
	s, _ := start(t, &fakeSource{st: status()})
	resp, err := http.Get("http://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /: %s, want 404", resp.Status)
	}
}

func TestStopAndContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln, Source: &fakeSource{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	cancel()
	if err := s.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("still listening after the context was cancelled")
	}
	s.Stop() // idempotent
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New without a source succeeded")
	}
	if _, err := New(Config{Source: &fakeSource{}, Listen: "9109"}, nil); err == nil || !strings.Contains(err.Error(), `"9109"`) {
		t.Errorf("bad listen address: %v", err)
	}
	s, err := New(Config{Source: &fakeSource{}}, nil)
	if err != nil || s.cfg.Listen != DefaultListen {
		t.Errorf("default listen: %v, %v", s, err)
	}
}
