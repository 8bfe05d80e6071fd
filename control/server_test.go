//go:build !windows

// The tests use unix sockets in a temporary directory; on Windows the
// endpoint is a named pipe.

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"go.uber.org/goleak"
)

// fakeSource is a Source with a fixed status and a set of sessions to kick.
type fakeSource struct {
	mu       sync.Mutex
	status   Status
	sessions map[string]int // identity -> live sessions; guarded by mu
	kickErr  error
}

func (f *fakeSource) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeSource) Kick(identity string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kickErr != nil {
		return 0, f.kickErr
	}
	n := f.sessions[identity]
	delete(f.sessions, identity)
	return n, nil
}

func newFake() *fakeSource {
	return &fakeSource{
		status: Status{
			Role: config.RoleServer, Version: "1.2.3", Listen: []string{"127.0.0.1:8443"},
			Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Now:     time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC),
			Sessions: []Session{{
				ID: "abc", Identity: "alice", Groups: []string{"eng"}, BytesIn: 10, BytesOut: 20,
				Addresses: []string{"198.18.100.7/24"}, CertDaysLeft: 12,
			}},
		},
		sessions: map[string]int{"alice": 2},
	}
}

// start runs a control server on a socket in a fresh directory.
func start(t *testing.T, src Source) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "s.sock")
	srv, err := New(Config{Path: path, Source: src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, path
}

func TestRoundTrip(t *testing.T) {
	src := newFake()
	_, path := start(t, src)
	ctx := context.Background()

	resp, err := Query(ctx, path, Request{Op: OpStatus})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status == nil {
		t.Fatal("status response without status")
	}
	got, want := resp.Status, src.Status()
	if got.Role != want.Role || got.Version != want.Version || got.Uptime() != time.Hour ||
		len(got.Sessions) != 1 || got.Sessions[0].Identity != "alice" || got.Sessions[0].BytesOut != 20 ||
		got.Sessions[0].Addresses[0] != "198.18.100.7/24" || got.Sessions[0].CertDaysLeft != 12 {
		t.Fatalf("status round trip: got %+v, want %+v", got, want)
	}

	resp, err = Query(ctx, path, Request{Op: OpKick, Identity: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Kicked != 2 {
		t.Fatalf("kicked %d, want 2", resp.Kicked)
	}
	resp, err = Query(ctx, path, Request{Op: OpKick, Identity: "alice"})
	if err != nil || resp.Kicked != 0 {
		t.Fatalf("second kick: %d, %v; want 0, nil", resp.Kicked, err)
	}
}

func TestRemoteErrors(t *testing.T) {
	src := newFake()
	src.kickErr = ErrNotSupported
	_, path := start(t, src)
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Op: OpKick, Identity: "alice"}, "kick alice: not supported"},
		{Request{Op: OpKick}, "kick: no identity given"},
		{Request{Op: "reboot"}, `unknown op "reboot"`},
		{Request{}, "bad request: no op"},
	} {
		_, err := Query(context.Background(), path, tc.req)
		var re *RemoteError
		if !errors.As(err, &re) || re.Msg != tc.want {
			t.Errorf("%+v: err %v, want remote error %q", tc.req, err, tc.want)
		}
	}
}

func TestPermissions(t *testing.T) {
	_, path := start(t, newFake())
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm != 0o660 {
		t.Fatalf("socket mode %#o, want 0660", perm)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&^0o750 != 0 {
		t.Fatalf("created directory mode %#o, want at most 0750", perm)
	}
}

func TestModeRefusesOthers(t *testing.T) {
	if _, err := New(Config{Path: "x", Mode: 0o666, Source: newFake()}, nil); err == nil {
		t.Fatal("New accepted a world-writable socket mode")
	}
}

func TestUnsafeDirectoryRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // whatever the umask
		t.Fatal(err)
	}
	srv, err := New(Config{Path: filepath.Join(dir, "s.sock"), Source: newFake()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start(context.Background())
	if !errors.Is(err, ErrUnsafeDir) {
		srv.Stop()
		t.Fatalf("Start in a 0777 directory: %v, want ErrUnsafeDir", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // what a crashed daemon leaves behind
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	if _, err := Query(context.Background(), path, Request{Op: OpStatus}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("query to a stale socket: %v, want ErrNotRunning", err)
	}

	srv, err := New(Config{Path: path, Source: newFake()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start over a stale socket: %v", err)
	}
	defer srv.Stop()
	if _, err := Query(context.Background(), path, Request{Op: OpStatus}); err != nil {
		t.Fatalf("query after replacing the stale socket: %v", err)
	}
}

func TestLiveSocketNotReplaced(t *testing.T) {
	_, path := start(t, newFake())
	second, err := New(Config{Path: path, Source: newFake()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(context.Background()); !errors.Is(err, ErrInUse) {
		second.Stop()
		t.Fatalf("second Start on a live socket: %v, want ErrInUse", err)
	}
	if _, err := Query(context.Background(), path, Request{Op: OpStatus}); err != nil {
		t.Fatalf("first server no longer answers: %v", err)
	}
}

func TestNonSocketNotReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Path: path, Source: newFake()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		srv.Stop()
		t.Fatalf("Start over a regular file: %v", err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "precious" {
		t.Fatalf("regular file touched: %q, %v", data, err)
	}
}

func TestStopRemovesSocket(t *testing.T) {
	srv, path := start(t, newFake())
	srv.Stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after Stop: %v", err)
	}
	_, err := Query(context.Background(), path, Request{Op: OpStatus})
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "no socket at "+path) {
		t.Fatalf("query after Stop: %v", err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestConcurrentQueries(t *testing.T) {
	earlier := goleak.IgnoreCurrent() // TestMain's to find
	src := newFake()
	srv, err := New(Config{Path: filepath.Join(t.TempDir(), "s.sock"), Source: src, MaxConns: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	const n = 40
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := Request{Op: OpStatus}
			if i%2 == 1 {
				req = Request{Op: OpKick, Identity: fmt.Sprintf("user%d", i)}
			}
			resp, err := Query(context.Background(), srv.Path(), req)
			if err == nil && req.Op == OpStatus && (resp.Status == nil || resp.Status.Role != config.RoleServer) {
				err = fmt.Errorf("query %d: bad status %+v", i, resp.Status)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	srv.Stop()
	// Every goroutine the server started has finished its work once Stop
	// returns; a goroutine past its wg.Done may still be unwinding for a
	// moment, which goleak allows for by looking again briefly.
	goleak.VerifyNone(t, earlier)
}

// raw sends data on a fresh connection and returns the decoded response.
func raw(t *testing.T, path string, data []byte) Response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = c.Write(data) }() // may fail once the server has answered
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp
}

func TestMalformedRequest(t *testing.T) {
	_, path := start(t, newFake())
	resp := raw(t, path, []byte("{not json}\n"))
	if resp.OK || !strings.HasPrefix(resp.Error, "bad request:") {
		t.Fatalf("malformed request answered %+v", resp)
	}
	resp = raw(t, path, []byte(`["status"]`))
	if resp.OK || !strings.HasPrefix(resp.Error, "bad request:") {
		t.Fatalf("array request answered %+v", resp)
	}
}

func TestOversizedRequest(t *testing.T) {
	_, path := start(t, newFake())
	big := `{"op":"kick","identity":"` + strings.Repeat("a", 4*MaxRequest) + `"}`
	resp := raw(t, path, []byte(big))
	if resp.OK || !strings.Contains(resp.Error, "request too large") {
		t.Fatalf("oversized request answered %+v", resp)
	}
	// A request just under the limit is still served.
	fits := `{"op":"kick","identity":"` + strings.Repeat("a", MaxRequest-64) + `"}`
	if resp := raw(t, path, []byte(fits)); !resp.OK {
		t.Fatalf("request under the limit refused: %+v", resp)
	}
}

func TestStopClosesIdleConnections(t *testing.T) {
	src := newFake()
	srv, err := New(Config{Path: filepath.Join(t.TempDir(), "s.sock"), Source: src, Timeout: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", srv.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Prove the server has accepted it: a half request is pending.
	if _, err := c.Write([]byte(`{"op":`)); err != nil {
		t.Fatal(err)
	}
	srv.Stop() // must not wait for the hour-long timeout
	var buf [1]byte
	if _, err := c.Read(buf[:]); err == nil {
		t.Fatal("connection still open after Stop")
	}
}

func TestContextStops(t *testing.T) {
	srv, err := New(Config{Path: filepath.Join(t.TempDir(), "s.sock"), Source: newFake()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := srv.Wait(); err != nil {
		t.Fatalf("Wait after cancel: %v", err)
	}
	if _, err := os.Lstat(srv.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after cancel: %v", err)
	}
}
