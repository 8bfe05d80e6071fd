package tunnel

import (
	"errors"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
)

// TestResumption: a client that reconnects resumes its TLS session
// (skipping the certificate exchange), and the certificate restored from
// the ticket is still judged by the gateway's current verifier: once it is
// revoked, the resumed handshake is refused with the revocation as the
// reason, as a full one would be.
func TestResumption(t *testing.T) {
	f := newFixture(t)
	refused := make(chan Refusal, 4)
	scfg := f.serverConfig(nil)
	scfg.OnRefuse = func(r Refusal) { refused <- r }
	srv := startServer(t, scfg)
	addr := srv.Addr().String()

	c, err := NewClient(f.clientConfig(addr), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	t.Cleanup(c.cancel)
	connect := func() (*clientSession, error) {
		cs, err := c.connect(addr)
		if err == nil {
			t.Cleanup(func() { cs.close(ErrStopped); cs.wait() })
		}
		return cs, err
	}

	first, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	if first.info.TLS.DidResume {
		t.Fatal("the first connection resumed a session")
	}
	second, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	if !second.info.TLS.DidResume {
		t.Fatal("the second connection made a full handshake; want resumption")
	}
	if second.peer.Name() != first.peer.Name() {
		t.Errorf("resumed gateway identity %v, want %v", second.peer, first.peer)
	}
	var gwResumed int
	for _, si := range srv.Sessions() {
		if si.TLS.DidResume {
			gwResumed++
			if si.Peer == nil || si.Peer.Name() != "alice" {
				t.Errorf("resumed session's identity %v, want alice", si.Peer)
			}
		}
	}
	if gwResumed != 1 {
		t.Errorf("gateway sees %d resumed sessions, want 1", gwResumed)
	}

	// Revoke alice's certificate: the client still holds a ticket, and
	// the gateway must refuse it.
	if c.tickets == nil {
		t.Fatal("client keeps no tickets")
	}
	f.serverCreds.setVerifier(t, f.h.ClientBundle(), f.h.ClientCA.CRL(t, 1, f.clientLeaf.Cert))
	if _, err := connect(); err == nil {
		t.Fatal("a revoked certificate resumed its session")
	}
	r := waitFor(t, refused, "refusal")
	if r.Stage != "verify" || !errors.Is(r.Err, pki.ErrRevoked) {
		t.Fatalf("refused at %q with %v, want verify / revoked", r.Stage, r.Err)
	}
}

// TestResumptionOff: NoResumption issues no tickets, so every connection
// is a full handshake.
func TestResumptionOff(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(nil)
	scfg.NoResumption = true
	srv := startServer(t, scfg)
	for range 2 {
		cs := connectSession(t, f, srv.Addr().String())
		if cs.info.TLS.DidResume {
			t.Fatal("resumed with resumption off")
		}
	}
}

// TestLocalTicketKeys: a new key every RotateTicketKeys, the newest first,
// at most KeepTicketKeys of them, so a ticket is accepted for at most
// KeepTicketKeys rotations.
func TestLocalTicketKeys(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	k := NewLocalTicketKeys()
	k.now = func() time.Time { return now }
	first := k.TicketKeys()
	if len(first) != 1 {
		t.Fatalf("%d keys at start, want 1", len(first))
	}
	if again := k.TicketKeys(); len(again) != 1 || again[0] != first[0] {
		t.Fatal("keys changed before the rotation was due")
	}
	seen := map[[32]byte]bool{first[0]: true}
	for i := range KeepTicketKeys + 2 {
		now = now.Add(RotateTicketKeys)
		keys := k.TicketKeys()
		if seen[keys[0]] {
			t.Fatalf("rotation %d reused a key", i)
		}
		seen[keys[0]] = true
		if want := min(i+2, KeepTicketKeys); len(keys) != want {
			t.Fatalf("rotation %d: %d keys, want %d", i, len(keys), want)
		}
	}
	for _, key := range k.TicketKeys() {
		if key == first[0] {
			t.Fatal("the first key is still accepted after KeepTicketKeys rotations")
		}
	}
}
