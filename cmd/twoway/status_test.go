//go:build !windows

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
)

// statusFake is a control.Source with canned answers.
type statusFake struct {
	mu     sync.Mutex
	st     control.Status
	kicks  map[string]int // identity -> sessions; guarded by mu
	kicked []string       // guarded by mu
}

func (f *statusFake) Status() control.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *statusFake) Kick(identity string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kicks == nil {
		return 0, control.ErrNotSupported
	}
	f.kicked = append(f.kicked, identity)
	n := f.kicks[identity]
	delete(f.kicks, identity)
	return n, nil
}

var statusNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func gatewayStatus() control.Status {
	return control.Status{
		Role: config.RoleServer, Version: "1.4.0", PID: 4242,
		Started: statusNow.Add(-(3*time.Hour + 4*time.Minute + 5*time.Second)), Now: statusNow,
		Listen: []string{"0.0.0.0:8443"},
		Certificates: []control.Certificate{
			{Which: control.CertOwn, Subject: "gw.example", Serial: "1a", NotAfter: statusNow.Add(90 * 24 * time.Hour), DaysLeft: 90},
			{Which: control.CertCA, Subject: "test root", Serial: "3c", NotAfter: statusNow.Add(5 * 24 * time.Hour), DaysLeft: 5},
		},
		CRLs: []control.CRL{
			{Issuer: "client CA", Number: "12", Revoked: 3, NextUpdate: statusNow.Add(5 * time.Hour)},
			{Issuer: "branch CA", Number: "4", NextUpdate: statusNow.Add(-time.Hour), Stale: true},
		},
		Sessions: []control.Session{{
			ID: "s1", Identity: "alice", Groups: []string{"eng", "ops"}, Serial: "ab12", Remote: "127.0.0.1:50000",
			Addresses: []string{"198.18.100.7/24"}, GSO: true, BytesIn: 1536, BytesOut: 3 << 20, PacketsIn: 12, PacketsOut: 34,
			Streams: 2, RTTMillis: 12.5, Since: statusNow.Add(-time.Hour), Resumed: true,
			CertNotAfter: statusNow.Add(30 * 24 * time.Hour), CertDaysLeft: 30,
			CANotAfter: statusNow.Add(-24 * time.Hour), CADaysLeft: -1,
		}},
		Totals: control.Totals{
			BytesIn: 10 << 10, BytesOut: 20 << 10, StreamsOpened: 7, Dropped: map[string]uint64{"spoof": 2, "policy": 3}, ECNMarked: 4,
			UDPIn: 900, UDPOut: 1000, UDPDropped: map[string]uint64{"replay": 1, "auth": 2}, UDPRoamed: 1,
		},
	}
}

// startControl serves src on a fresh socket and returns its path.
func startControl(t *testing.T, path string, src control.Source) string {
	t.Helper()
	srv, err := control.New(control.Config{Path: path, Source: src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return path
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	err := root.Execute()
	return out.String(), err
}

func TestStatusTable(t *testing.T) {
	path := startControl(t, filepath.Join(t.TempDir(), "server.sock"), &statusFake{st: gatewayStatus()})
	out, err := runCLI(t, "status", "--socket", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"twoway server 1.4.0, up 3h4m5s",
		"pid 4242",
		"listening on 0.0.0.0:8443",
		"traffic: in 10.0 KiB, out 20.0 KiB, streams opened 7, packets dropped 5 (policy 3, spoof 2), ECN marked 4\n",
		"udp: datagrams in 900, out 1000, refused 3 (auth 2, replay 1), address changes 1\n",
		"1 session:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// One row per session, columns in header order.
	row := regexp.MustCompile(`(?m)^  alice\s+eng,ops\s+127\.0\.0\.1:50000\s+198\.18\.100\.7/24 \(gso\)\s+1\.5 KiB \(12 pkt\)\s+3\.0 MiB \(34 pkt\)\s+2\s+12\.5ms\s+1h0m0s \(resumed\)\s+30d\s+EXPIRED\s+-$`)
	if !row.MatchString(out) {
		t.Errorf("no matching session row:\n%s", out)
	}
	if strings.Contains(out, "RECONNECTS") {
		t.Errorf("gateway table shows a client column:\n%s", out)
	}
	cert := regexp.MustCompile(`(?m)^  ca\s+test root\s+3c\s+2026-03-06\s+5d \(!\)$`)
	if !cert.MatchString(out) {
		t.Errorf("no matching CA certificate row:\n%s", out)
	}
	for _, re := range []string{`(?m)^  client CA\s+12\s+3\s+2026-03-01 17:00\s+5h \(!\)$`, `(?m)^  branch CA\s+4\s+0\s+2026-03-01 11:00\s+STALE$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no CRL row matching %s:\n%s", re, out)
		}
	}
}

func TestStatusClientTable(t *testing.T) {
	st := control.Status{
		Role: config.RoleClient, Version: "1.4.0", Started: statusNow.Add(-time.Minute), Now: statusNow,
		Endpoint: "127.0.0.1:8443",
		Sessions: []control.Session{{
			ID: "c1", Identity: "gw.example", Remote: "127.0.0.1:8443", Reconnects: 3,
			LastError: "peer stopped responding", Since: statusNow.Add(-10 * time.Second),
		}},
		Forwards: []control.Forward{
			{Kind: "local", Listen: "127.0.0.1:0", Target: "db:5432", Bound: "127.0.0.1:40001", State: control.ForwardListening},
			{Kind: "remote", Listen: "127.0.0.1:9000", Target: "127.0.0.1:22", State: control.ForwardFailed, Error: "bind refused by policy"},
		},
	}
	path := startControl(t, filepath.Join(t.TempDir(), "client.sock"), &statusFake{st: st})
	out, err := runCLI(t, "status", "--socket", path, "--role", "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^gateway 127\.0\.0\.1:8443$`,
		`RECONNECTS\s+LAST ERROR`,
		`(?m)^  gw\.example\s.*\s3\s+peer stopped responding$`,
		`(?m)^  local\s+127\.0\.0\.1:0\s+db:5432\s+127\.0\.0\.1:40001\s+listening$`,
		`(?m)^  remote\s+127\.0\.0\.1:9000\s+127\.0\.0\.1:22\s+-\s+failed: bind refused by policy$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "kept") {
		t.Errorf("a kept VPN configuration shown without one:\n%s", out)
	}

	// Reconnecting with [vpn] persist: no session, the configuration kept.
	st.Sessions = []control.Session{}
	st.KeptVPN = &control.KeptVPN{Addresses: []string{"198.18.100.2/24", "2001:db8:100::2/64"}, Routes: []string{"0.0.0.0/0"}}
	path = startControl(t, filepath.Join(t.TempDir(), "client.sock"), &statusFake{st: st})
	out, err = runCLI(t, "status", "--socket", path, "--role", "client")
	if err != nil {
		t.Fatal(err)
	}
	if re := `(?m)^VPN configuration kept while reconnecting \(persist\): addresses 198\.18\.100\.2/24 2001:db8:100::2/64, routes 0\.0\.0\.0/0; packets for the tunnel are dropped$`; !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("output does not match %s:\n%s", re, out)
	}
	out, err = runCLI(t, "status", "--socket", path, "--role", "client", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"kept_vpn": {`) || !strings.Contains(out, `"routes": [`) {
		t.Errorf("--json lacks kept_vpn:\n%s", out)
	}
}

func TestStatusJSON(t *testing.T) {
	want := gatewayStatus()
	path := startControl(t, filepath.Join(t.TempDir(), "server.sock"), &statusFake{st: want})
	out, err := runCLI(t, "status", "--socket", path, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got control.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output is not a status: %v\n%s", err, out)
	}
	if got.Role != want.Role || got.PID != want.PID || len(got.Sessions) != 1 ||
		got.Sessions[0].BytesOut != want.Sessions[0].BytesOut || got.Sessions[0].CADaysLeft != -1 ||
		got.Totals.Dropped["spoof"] != 2 || !got.Started.Equal(want.Started) {
		t.Fatalf("JSON status %+v, want %+v", got, want)
	}
}

func TestStatusFindsDefaultSocket(t *testing.T) {
	// The system directory and $XDG_RUNTIME_DIR, both temporary: what
	// else runs on this machine stays out of the test.
	system, xdg := t.TempDir(), t.TempDir()
	socketCandidates = func(role config.Role) []string {
		return []string{filepath.Join(system, string(role)+".sock"), filepath.Join(xdg, "twoway", string(role)+".sock")}
	}
	t.Cleanup(func() { socketCandidates = control.Candidates })
	st := gatewayStatus()
	st.Role = config.RoleClient
	startControl(t, filepath.Join(xdg, "twoway", "client.sock"), &statusFake{st: st})
	out, err := runCLI(t, "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "twoway client 1.4.0") {
		t.Fatalf("status without flags did not find the client:\n%s", out)
	}
	_, err = runCLI(t, "status", "--role", "server")
	if err == nil || !strings.HasPrefix(err.Error(), "no twoway server is running (no socket at ") {
		t.Fatalf("status --role server with no gateway: %v", err)
	}
}

func TestStatusNotRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.sock")
	_, err := runCLI(t, "status", "--socket", path, "--role", "server")
	if err == nil || err.Error() != "no twoway server is running (no socket at "+path+")" {
		t.Fatalf("status with no daemon: %v", err)
	}
	_, err = runCLI(t, "kick", "alice", "--socket", path)
	if err == nil || err.Error() != "no twoway server is running (no socket at "+path+")" {
		t.Fatalf("kick with no daemon: %v", err)
	}
	_, err = runCLI(t, "status", "--role", "gateway")
	if err == nil || !strings.Contains(err.Error(), `--role "gateway"`) {
		t.Fatalf("bad --role: %v", err)
	}
}

func TestKick(t *testing.T) {
	src := &statusFake{st: gatewayStatus(), kicks: map[string]int{"alice": 2}}
	path := startControl(t, filepath.Join(t.TempDir(), "server.sock"), src)
	out, err := runCLI(t, "kick", "alice", "--socket", path)
	if err != nil {
		t.Fatal(err)
	}
	if out != "kicked 2 sessions of alice\n" {
		t.Fatalf("kick output %q", out)
	}
	_, err = runCLI(t, "kick", "alice", "--socket", path)
	if err == nil || err.Error() != `no session of "alice" on the gateway` {
		t.Fatalf("second kick: %v", err)
	}
	if len(src.kicked) != 2 || src.kicked[0] != "alice" {
		t.Fatalf("source saw kicks %v", src.kicked)
	}
}

func TestKickOnClientRefused(t *testing.T) {
	path := startControl(t, filepath.Join(t.TempDir(), "client.sock"), &statusFake{st: control.Status{Role: config.RoleClient}})
	_, err := runCLI(t, "kick", "alice", "--socket", path)
	if err == nil || err.Error() != "kick alice: not supported" {
		t.Fatalf("kick on a client: %v", err)
	}
}

// fleetFake is a gateway of a fleet: --fleet asks it for everyone's
// sessions and kicks everywhere.
type fleetFake struct {
	statusFake
	fleetKicked []string
}

func (f *fleetFake) FleetStatus() (control.Status, error) {
	st := f.Status()
	st.Sessions = []control.Session{
		{Gateway: "gw1", ID: "a", Identity: "alice", Groups: []string{"eng"}, Remote: "198.18.0.7:50000", Addresses: []string{"198.18.100.7/24"},
			BytesIn: 2048, Since: statusNow.Add(-2 * time.Hour)},
		{Gateway: "gw2", ID: "b", Identity: "bob", Since: statusNow.Add(-time.Minute)},
	}
	return st, nil
}

func (f *fleetFake) FleetKick(identity string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fleetKicked = append(f.fleetKicked, identity)
	return 2, nil
}

// TestStatusAndKickFleet: --fleet lists every gateway's sessions with the
// gateway holding each, and kicks through the fleet; a daemon that is not
// a fleet gateway says so.
func TestStatusAndKickFleet(t *testing.T) {
	st := gatewayStatus()
	st.Fleet = &control.Fleet{Name: "gw1", Endpoints: []string{"https://etcd1:2379"}, Reachable: true, LastContact: statusNow.Add(-2 * time.Second),
		Refused: 3, ServedCached: 2, PendingReleases: 1}
	fake := &fleetFake{statusFake: statusFake{st: st}}
	path := startControl(t, filepath.Join(t.TempDir(), "server.sock"), fake)
	out, err := runCLI(t, "status", "--socket", path, "--fleet")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `fleet: gateway "gw1", etcd reachable (last contact 2s ago; https://etcd1:2379); while etcd was away: refused 3, served from cache 2, 0 not yet written back, 1 releases not yet written`) {
		t.Errorf("no fleet line:\n%s", out)
	}
	row := regexp.MustCompile(`(?m)^  gw1\s+alice\s+eng\s+198\.18\.0\.7:50000\s+198\.18\.100\.7/24\s+2\.0 KiB.*\s+2h0m0s$`)
	if !strings.Contains(out, "GATEWAY") || !row.MatchString(out) || !strings.Contains(out, "  gw2 ") {
		t.Errorf("fleet status table:\n%s", out)
	}
	out, err = runCLI(t, "kick", "--socket", path, "--fleet", "alice")
	if err != nil || !strings.Contains(out, "kicked 2 sessions of alice") {
		t.Errorf("kick --fleet: %q, %v", out, err)
	}
	if len(fake.fleetKicked) != 1 || fake.fleetKicked[0] != "alice" || len(fake.kicked) != 0 {
		t.Errorf("fleet kicks %v, local kicks %v", fake.fleetKicked, fake.kicked)
	}

	plain := startControl(t, filepath.Join(t.TempDir(), "plain.sock"), &statusFake{st: gatewayStatus()})
	if _, err := runCLI(t, "status", "--socket", plain, "--fleet"); err == nil || !strings.Contains(err.Error(), "not a fleet gateway") {
		t.Errorf("status --fleet on a lone gateway: %v", err)
	}
}

func TestStatusRenewal(t *testing.T) {
	st := control.Status{
		Role: config.RoleClient, Version: "1.4.0", Started: statusNow.Add(-time.Minute), Now: statusNow,
		Renewal: &control.Renewal{Next: statusNow.Add(90 * time.Minute)},
		Certificates: []control.Certificate{{Which: control.CertOwn, Subject: "CN=alice", Serial: "1f",
			NotAfter: statusNow.Add(4 * 24 * time.Hour), DaysLeft: 4}},
	}
	path := startControl(t, filepath.Join(t.TempDir(), "client.sock"), &statusFake{st: st})
	out, err := runCLI(t, "status", "--socket", path, "--role", "client")
	if err != nil {
		t.Fatal(err)
	}
	// A 7-day certificate that renews itself is not flagged (!).
	if !regexp.MustCompile(`(?m)^  own\s+CN=alice\s+1f\s+\S+\s+4d \(renews \d{4}-\d\d-\d\d\)$`).MatchString(out) || strings.Contains(out, "(!)") {
		t.Errorf("own certificate with renewal working:\n%s", out)
	}
	if re := `(?m)^certificate renewal: next \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in 1h30m0s\); not tried yet$`; !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("output does not match %s:\n%s", re, out)
	}
	st.Renewal = &control.Renewal{Next: statusNow.Add(2 * time.Minute), LastAttempt: statusNow.Add(-time.Minute), LastOutcome: "failed",
		LastError: "gateway does not renew certificates", Failures: 3}
	path = startControl(t, filepath.Join(t.TempDir(), "client.sock"), &statusFake{st: st})
	if out, err = runCLI(t, "status", "--socket", path, "--role", "client"); err != nil {
		t.Fatal(err)
	}
	if re := `(?m)^certificate renewal: next .* \(in 2m0s\); FAILING \(3 attempts, last .*: gateway does not renew certificates\)$`; !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("output does not match %s:\n%s", re, out)
	}
	if !strings.Contains(out, "4d (!)") {
		t.Errorf("own certificate with renewal failing is not flagged:\n%s", out)
	}
	if out, err = runCLI(t, "status", "--socket", path, "--role", "client", "--json"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"renewal": {`) || !strings.Contains(out, `"last_outcome": "failed"`) {
		t.Errorf("--json lacks renewal:\n%s", out)
	}
}
