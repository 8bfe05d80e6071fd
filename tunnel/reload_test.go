package tunnel

import (
	"errors"

	"net"
	"testing"
	"time"

	"github.com/twoway/twoway/policy"
)

// TestReloadRechecksForwards narrows the policy under a connected client
// that holds a -R listener, a connection through it and a -L stream:
// after Revalidate the listener is gone (and the client told so), both
// streams are reset, and the closures are counted. A forward the new
// policy still allows keeps working.
func TestReloadRechecksForwards(t *testing.T) {
	f := newFixture(t)
	kept := startTarget(t, echo)
	dropped := startTarget(t, echo)
	svc := startTarget(t, echo) // the client-side service behind -R
	newPol := func(targets []string, binds []string) Policy {
		p, err := policy.New(policy.Config{Admit: policy.Admission{Groups: []string{"eng"}}, Rules: []policy.Rule{{Name: "eng", Groups: []string{"eng"}, Targets: targets, Binds: binds}}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv := startServer(t, f.serverConfig(newPol([]string{kept.addr(), dropped.addr()}, []string{"127.0.0.1"})))

	remote := make(chan error, 4)
	ccfg := f.clientConfig(srv.Addr().String(),
		mustForward(t, ForwardLocal, "127.0.0.1:0", kept.addr()),
		mustForward(t, ForwardLocal, "127.0.0.1:0", dropped.addr()),
		mustForward(t, ForwardRemote, "127.0.0.1:0", svc.addr()))
	bound := make(chan string, 4)
	ccfg.OnRemoteListen = func(_ Forward, b string, err error) { bound <- b; remote <- err }
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")
	if err := waitFor(t, remote, "remote listen"); err != nil {
		t.Fatal(err)
	}
	rAddr := waitFor(t, bound, "bound address")

	fw := c.Forwards()
	keptConn := dialRoundTrip(t, fw[0].Local.String(), "kept")
	droppedConn := dialRoundTrip(t, fw[1].Local.String(), "dropped")
	reverseConn := dialRoundTrip(t, rAddr, "reverse")

	srv.SetPolicy(newPol([]string{kept.addr()}, nil))
	srv.Revalidate()

	if err := waitFor(t, remote, "listen_error after reload"); !errors.Is(err, ErrDenied) {
		t.Fatalf("client told %v, want a denial", err)
	}
	for name, conn := range map[string]net.Conn{"-L to the dropped target": droppedConn, "connection through -R": reverseConn} {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("%s still open after the reload: %v", name, err)
		}
	}
	if c, err := net.DialTimeout("tcp", rAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the -R listener on %s still accepts after the reload", rAddr)
	}
	roundTrip(t, keptConn, "still allowed")
	if got := srv.Totals().PolicyClosed; got != 3 {
		t.Fatalf("PolicyClosed = %d, want 3 (listener and two streams)", got)
	}
	// The session itself stays: alice is still admitted.
	if n := len(srv.Sessions()); n != 1 {
		t.Fatalf("%d sessions after the reload, want 1", n)
	}
}

func dialRoundTrip(t *testing.T, addr, msg string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	roundTrip(t, conn, msg)
	return conn
}
