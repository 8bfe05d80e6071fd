package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

// TestLocalForward is the basic story: a client with -L reaches an echo
// server behind the gateway, and the session carries what both sides
// verified.
func TestLocalForward(t *testing.T) {
	f := newFixture(t)
	var srvInfo = make(chan SessionInfo, 1)
	scfg := f.serverConfig(nil)
	scfg.OnSession = func(si SessionInfo) { srvInfo <- si }
	srv := startServer(t, scfg)
	tgt := startTarget(t, echo)

	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)

	ci := waitFor(t, ev.up, "client session")
	si := waitFor(t, srvInfo, "server session")
	if ci.ID == "" || ci.ID != si.ID {
		t.Fatalf("session ids: client %q server %q", ci.ID, si.ID)
	}
	if si.Peer.CommonName != "alice" || !si.Peer.InGroup("eng") {
		t.Fatalf("server sees peer %+v", si.Peer)
	}
	if ci.Peer.CommonName != "127.0.0.1" || ci.Peer.Issuer != "test server CA" {
		t.Fatalf("client sees gateway %+v", ci.Peer)
	}
	if ci.Self == nil || ci.Self.Name != "alice" || ci.Self.Issuer != "test client CA" {
		t.Fatalf("gateway's view of us: %+v", ci.Self)
	}
	if len(ci.Grants) != 1 || ci.Grants[0] != "test grants for alice" {
		t.Fatalf("grants %v", ci.Grants)
	}
	if ci.TLS.NegotiatedProtocol != ALPN || ci.TLS.Version != 0x0304 {
		t.Fatalf("TLS state: alpn %q version %x", ci.TLS.NegotiatedProtocol, ci.TLS.Version)
	}
	names := func(chain []*x509.Certificate) string {
		var n []string
		for _, c := range chain {
			n = append(n, c.Subject.CommonName)
		}
		return strings.Join(n, " <- ")
	}
	if got := names(ci.VerifiedChain); got != "127.0.0.1 <- test server CA <- test root" {
		t.Fatalf("client verified the gateway via %s", got)
	}
	if got := names(si.VerifiedChain); got != "alice <- test client CA <- test root" {
		t.Fatalf("gateway verified the client via %s", got)
	}
	if ci.Params.MaxStreams != DefaultTuning().MaxStreams {
		t.Fatalf("params %+v", ci.Params)
	}

	local := c.Forwards()[0].Local.String()
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := []byte("hello through the tunnel")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %q", got)
	}
}

// TestHalfClose checks that an end of data travels as an end, in both
// directions, while the other direction keeps working: the target reads
// until EOF, only then answers, then closes.
func TestHalfClose(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	tgt := startTarget(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c) // returns only on the client's FIN
		fmt.Fprintf(c, "got %d bytes", n)
	})
	c := startClient(t, f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr())))

	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := bytes.Repeat([]byte("x"), 100_000)
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn) // ends on the target's close, passed on as FIN
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "got 100000 bytes" {
		t.Fatalf("answer %q", got)
	}
}

// TestPolicyDial checks the gateway's policy decisions on forwards.
func TestPolicyDial(t *testing.T) {
	f := newFixture(t)
	allowed := startTarget(t, echo)
	denied := startTarget(t, echo)
	_, deniedPort, _ := net.SplitHostPort(denied.addr())
	var mu sync.Mutex
	var asked []policy.Target
	pol := &fakePolicy{dial: func(id *pki.Identity, tg policy.Target) policy.Decision {
		mu.Lock()
		asked = append(asked, tg)
		mu.Unlock()
		if id.CommonName != "alice" || tg.Proto != "tcp" {
			return policy.Decision{Rule: "bad call"}
		}
		if strconv.Itoa(int(tg.Port)) == deniedPort || tg.Addr != netip.MustParseAddr("127.0.0.1") {
			return policy.Decision{Rule: "deny rule"}
		}
		return policy.Decision{Allow: true, Rule: "allow rule"}
	}}
	scfg := f.serverConfig(pol)
	// multi.test resolves to a denied address first, then an allowed one:
	// the gateway must skip the first, not give up or dial it.
	scfg.Resolver = fakeResolver{"multi.test": {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::ffff:127.0.0.1")}}
	srv := startServer(t, scfg)
	ccfg := f.clientConfig(srv.Addr().String())
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")

	_, allowedPort, _ := net.SplitHostPort(allowed.addr())
	ap, _ := strconv.Atoi(allowedPort)
	dp, _ := strconv.Atoi(deniedPort)

	// Allowed, through a name that resolves to a denied and an allowed address.
	cs, st, _, err := c.open("multi.test", uint16(ap))
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	st.Close()
	cs.streamDone()
	mu.Lock()
	if len(asked) != 2 || asked[0].Host != "multi.test" || asked[0].Addr != netip.MustParseAddr("127.0.0.2") || asked[1].Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("policy asked %+v", asked)
	}
	mu.Unlock()

	_, _, _, err = c.open("127.0.0.1", uint16(dp))
	var se *StreamError
	if !errors.Is(err, ErrDenied) || !errors.As(err, &se) || !strings.Contains(se.Message, "deny rule") {
		t.Fatalf("denied dial: %v", err)
	}
	mu.Lock()
	if last := asked[len(asked)-1]; last.Host != "" || last.Port != uint16(dp) {
		t.Fatalf("IP literal target should have an empty Host: %+v", last)
	}
	mu.Unlock()

	if _, _, _, err = c.open("nowhere.test", 80); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unresolvable: %v", err)
	}
	// A port nothing listens on: refused, and errors.Is matches the errno
	// too, so a SOCKS front end maps it like a local dial error.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	_, closedPort, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()
	cp, _ := strconv.Atoi(closedPort)
	if _, _, _, err = c.open("127.0.0.1", uint16(cp)); !errors.Is(err, ErrRefused) {
		t.Fatalf("closed port: %v", err)
	}
	if _, _, _, err = c.open("bad host!", 80); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad host: %v", err)
	}

	// Through the -L path a denied target is a reset local connection.
	c2 := startClient(t, f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", denied.addr())))
	conn, err := net.Dial("tcp", c2.Forwards()[0].Local.String())
	if err != nil {
		// On loopback the reset can overtake connect's own return:
		// the connection was refused all the same.
		if !isRefusedLocally(err) {
			t.Fatal(err)
		}
		return
	}
	defer conn.Close()
	if _, err := conn.Read(make([]byte, 1)); !isRefusedLocally(err) {
		t.Fatalf("denied -L connection: read returned %v", err)
	}
}

type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestLargeTransfer sends 64 MiB each way through one stream and compares
// SHA-256 digests at both ends.
func TestLargeTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfer")
	}
	const size = 64 << 20
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	// The target hashes what arrives and sends its own random data back.
	type result struct{ got, sent string }
	results := make(chan result, 1)
	tgt := startTarget(t, func(c net.Conn) {
		var wg sync.WaitGroup
		var sent string
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, size))
			c.(*net.TCPConn).CloseWrite()
			sent = hex.EncodeToString(h.Sum(nil))
		}()
		h := sha256.New()
		io.Copy(h, c)
		wg.Wait()
		results <- result{got: hex.EncodeToString(h.Sum(nil)), sent: sent}
	})
	c := startClient(t, f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr())))
	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sent string
	done := make(chan struct{})
	go func() {
		defer close(done)
		h := sha256.New()
		io.Copy(io.MultiWriter(conn, h), io.LimitReader(rand.Reader, size))
		conn.(*net.TCPConn).CloseWrite()
		sent = hex.EncodeToString(h.Sum(nil))
	}()
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil || n != size {
		t.Fatalf("received %d bytes, err %v", n, err)
	}
	<-done
	r := waitFor(t, results, "target result")
	if r.got != sent {
		t.Fatalf("client->target digest mismatch: sent %s, target got %s", sent, r.got)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != r.sent {
		t.Fatalf("target->client digest mismatch: target sent %s, client got %s", r.sent, got)
	}
}

// TestManyStreams runs 1,000 forwarded connections at once on one session.
func TestManyStreams(t *testing.T) {
	const n = 1000
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	tgt := startTarget(t, echo)
	c := startClient(t, f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr())))
	local := c.Forwards()[0].Local.String()

	// Open all, write to all, then read all: every stream is open at the
	// same time, without a goroutine per connection in the test itself.
	conns := make([]net.Conn, n)
	for i := range conns {
		conn, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer conn.Close()
		conns[i] = conn
		if _, err := fmt.Fprintf(conn, "stream %04d|", i); err != nil {
			t.Fatal(err)
		}
	}
	for i, conn := range conns {
		want := fmt.Sprintf("stream %04d|", i)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if string(got) != want {
			t.Fatalf("stream %d: got %q", i, got)
		}
	}
	si := srv.Sessions()
	if len(si) != 1 {
		t.Fatalf("%d sessions", len(si))
	}
}
