package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twoway/twoway/pki"
)

// Admission: who may hold a session, and for how long. A client is let in
// by its certificate (tlsconf.go), the policy (hello) and the gateway's
// limits (admit); a live session is checked again on every reload
// (Revalidate) and can be ended by an administrator (Kick). Every refusal
// goes through refuse, which logs it, rate-limited, and calls OnRefuse.

// Refusal describes a connection the server turned away, for the log and
// the OnRefuse hook.
type Refusal struct {
	Remote net.Addr
	// Stage is where it failed: "rate" (per-source handshake limit),
	// "capacity" (too many handshakes or sessions), "tls" (handshake),
	// "verify" (certificate), "alpn", "hello", "admit" (policy),
	// "revalidate" (a live session failing a re-check).
	Stage string
	// Presented is what the peer's leaf certificate claims, unverified,
	// when it sent one and verification failed.
	Presented *pki.Identity
	// Identity is the verified identity, for "admit" and "revalidate".
	Identity *pki.Identity
	Err      error
}

// logAttrs renders a refusal for slog. A session's logger already
// carries the peer and remote address, so withPeer is false for it.
func (r Refusal) logAttrs(withPeer bool) []any {
	attrs := []any{"stage", r.Stage}
	if withPeer {
		attrs = append(attrs, "remote", addrString(r.Remote))
		if r.Identity != nil {
			attrs = append(attrs, "peer", r.Identity)
		}
	}
	if r.Identity == nil && r.Presented != nil {
		attrs = append(attrs, "presented", r.Presented)
	}
	var ve *pki.VerifyError
	if errors.As(r.Err, &ve) {
		attrs = append(attrs, "check", ve.Check)
	}
	return append(attrs, "err", r.Err)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (s *Server) refuse(r Refusal, logger *slog.Logger) {
	// A flood of refusals is one event, not thousands of lines: past
	// refusalLogBurst a second, they are counted and the count logged.
	if skipped, ok := s.refusals.Allow(time.Now(), 1, time.Second/refusalLogBurst); ok {
		if skipped > 0 {
			s.log.Warn("connection refusals not logged (rate limit)", "count", skipped)
		}
		if logger == nil {
			s.log.Warn("connection refused", r.logAttrs(true)...)
		} else {
			logger.Warn("connection refused", r.logAttrs(false)...)
		}
	}
	if s.cfg.OnRefuse != nil {
		s.cfg.OnRefuse(r)
	}
}

// admit adds ss, which the policy admitted, to the live sessions if the
// gateway's limits let it in: not stopping, under MaxSessions, and its name
// not held by a certificate from another CA. Past MaxSessionsPerIdentity it
// still gets in, and the identity's oldest session is told why and closed.
// A refusal says what to answer the client with and what to log.
func (s *Server) admit(ss *serverSession) *admitRefusal {
	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return &admitRefusal{"capacity", ctlShutdown, "gateway is shutting down", ErrShutdown}
	case len(s.sessions) >= s.cfg.MaxSessions:
		s.mu.Unlock()
		return &admitRefusal{"capacity", ctlBusy, "gateway is at its session limit", fmt.Errorf("session limit %d reached", s.cfg.MaxSessions)}
	}
	if other := s.byName[ss.peer.Name()]; other.n > 0 && other.issuer != issuerOf(ss.peer) {
		// Two CAs vouch for the same name: whichever came first keeps
		// it, rather than the two sharing addresses and kicks.
		s.mu.Unlock()
		msg := fmt.Sprintf("the name %q is in use by a certificate from another CA (%s)", ss.peer.Name(), other.issuerName)
		return &admitRefusal{"admit", ctlDenied, msg, fmt.Errorf("%w: %s", ErrDenied, msg)}
	}
	s.sessions[ss.id] = ss
	nb := s.byName[ss.peer.Name()]
	nb.n++
	nb.issuer, nb.issuerName = issuerOf(ss.peer), ss.peer.Issuer
	s.byName[ss.peer.Name()] = nb
	key := ss.peer.Key()
	s.byIdentity[key]++
	var replaced *serverSession
	if lim := s.cfg.MaxSessionsPerIdentity; lim > 0 && s.byIdentity[key] > lim {
		replaced = s.oldestOf(key, ss)
	}
	s.mu.Unlock()
	if replaced != nil {
		replaced.log.Info("session replaced: identity is at its session limit", "limit", s.cfg.MaxSessionsPerIdentity, "by", ss.id)
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			replaced.closeWithBye(ctlLimit, fmt.Sprintf("replaced by a newer session of %s (limit %d per identity)", ss.peer.Name(), s.cfg.MaxSessionsPerIdentity),
				fmt.Errorf("%w: replaced by session %s", ErrLimit, ss.id))
		}()
	}
	return nil
}

// admitRefusal is why admit turned a session away: the refusal stage, the
// control code and message for the client, and the error to log.
type admitRefusal struct {
	stage, code, msg string
	err              error
}

// removeSession forgets ss. Called with s.mu held.
func (s *Server) removeSession(ss *serverSession) {
	if _, ok := s.sessions[ss.id]; !ok {
		return
	}
	delete(s.sessions, ss.id)
	key := ss.peer.Key()
	if s.byIdentity[key]--; s.byIdentity[key] <= 0 {
		delete(s.byIdentity, key)
	}
	nb := s.byName[ss.peer.Name()]
	if nb.n--; nb.n <= 0 {
		delete(s.byName, ss.peer.Name())
	} else {
		s.byName[ss.peer.Name()] = nb
	}
}

// nameHolder is who holds a name among the live sessions.
type nameHolder struct {
	n          int
	issuer     string // fingerprint of the CA that signed their certificates
	issuerName string
}

// issuerOf is the fingerprint of the CA that signed id's certificate.
func issuerOf(id *pki.Identity) string {
	if len(id.CAs) == 0 {
		return id.Issuer
	}
	return id.CAs[0].Fingerprint
}

// oldestOf returns the longest-established live session of key other than
// except. Called with s.mu held; it scans every session, which only
// happens when an identity is over its limit.
func (s *Server) oldestOf(key string, except *serverSession) *serverSession {
	var oldest *serverSession
	for _, o := range s.sessions {
		if o == except || o.mux.IsClosed() || o.peer.Key() != key {
			continue
		}
		if oldest == nil || o.info.Established.Before(oldest.info.Established) {
			oldest = o
		}
	}
	return oldest
}

// Revalidate re-checks every live session against the current credentials
// (chain, expiry, CRLs) and policy, and closes those that no longer pass,
// telling the client why. Call it after reloading either. It returns when
// the failing sessions are closed; they are closed in parallel, so one
// stalled peer does not delay the others.
func (s *Server) Revalidate() {
	ver := s.cfg.Credentials.Verifier()
	pol := s.pol()
	s.mu.Lock()
	sessions := s.sessionList()
	s.mu.Unlock()
	type verdict struct {
		code string
		err  error
	}
	var failing []*serverSession
	var verdicts []verdict
	for _, ss := range sessions {
		code, err := ss.recheck(ver, pol)
		if err == nil {
			ss.recheckForwards(pol)
			continue
		}
		s.refuse(Refusal{Remote: ss.info.Remote, Stage: "revalidate", Identity: ss.peer, Err: err}, ss.log)
		failing = append(failing, ss)
		verdicts = append(verdicts, verdict{code, err})
	}
	closeSessions(failing, func(i int, ss *serverSession) {
		v := verdicts[i]
		ss.closeWithBye(v.code, v.err.Error(), fmt.Errorf("revalidation: %w", v.err))
	})
}

// recheck verifies the session's chain and admission again; on failure it
// returns the bye code to send and why.
func (ss *serverSession) recheck(ver *pki.Verifier, pol Policy) (string, error) {
	id, err := ver.Verify(ss.chain, pki.VerifyOptions{Usage: pki.UsageClient})
	switch {
	case errors.Is(err, pki.ErrRevoked):
		return ctlRevoked, err
	case errors.Is(err, pki.ErrExpired):
		return ctlExpired, err
	case err != nil:
		return ctlDenied, err
	}
	id = pol.Honour(id)
	if d := pol.Admit(id); !d.Allow {
		return ctlDenied, fmt.Errorf("%w: no longer admitted (rule %q)", ErrDenied, d.Rule)
	}
	if !slices.Equal(id.Groups, ss.peer.Groups) {
		// The session's identity is read without a lock by its streams
		// and packets; a new one comes with a new session.
		return ctlDenied, fmt.Errorf("%w: the groups its CA may grant changed (now %v); reconnect", ErrDenied, id.Groups)
	}
	return "", nil
}

// recheckForwards asks pol again about every remote listener and every
// forwarded stream the session holds, and closes what it no longer allows:
// a listener with a listen_error telling the client why, a stream with a
// reset on both sides. Without this, narrowing the policy would leave a
// connected client with whatever it had opened before, for as long as it
// stays connected.
func (ss *serverSession) recheckForwards(pol Policy) {
	var lost []*remoteListener
	closedListener := make(map[uint32]bool)
	ss.mu.Lock()
	for id, rl := range ss.listeners {
		if d := pol.Bind(ss.peer, rl.bound.Addr(), rl.bound.Port()); !d.Allow {
			delete(ss.listeners, id)
			closedListener[id] = true
			lost = append(lost, rl)
			ss.log.Info("remote listener closed: no longer allowed by policy", "id", id, "addr", rl.bound.String(), "rule", d.Rule)
		}
	}
	var streams []uint32
	for sid, f := range ss.forwards {
		if f.listener != 0 {
			if !closedListener[f.listener] {
				continue
			}
			ss.log.Info("stream closed: its remote listener is no longer allowed", "stream", sid, "listener", f.listener)
		} else {
			d := ss.srv.dialDecision(pol, ss.peer, f.host, f.addr.Addr(), f.addr.Port())
			if d.Allow {
				continue
			}
			target := f.addr.String()
			if f.host != "" {
				target = net.JoinHostPort(f.host, strconv.Itoa(int(f.addr.Port()))) + " (" + f.addr.Addr().String() + ")"
			}
			ss.log.Info("stream closed: target no longer allowed by policy", "stream", sid, "target", target, "rule", d.Rule)
		}
		streams = append(streams, sid)
	}
	ss.mu.Unlock()

	for _, rl := range lost {
		rl.ln.Close()
		_ = ss.sendControl(&controlMsg{Type: msgListenError, ID: rl.id, Code: ctlDenied,
			Message: fmt.Sprintf("%s is no longer allowed by the gateway's policy", rl.bound)})
	}
	for _, sid := range streams {
		ss.abortStream(sid) // or, not proxied yet, as soon as it is
		if ss.peerCaps[capReset] && !ss.mux.IsClosed() {
			_ = ss.sendControl(&controlMsg{Type: msgReset, Stream: sid})
		}
	}
	ss.srv.totals.policyClosed.Add(uint64(len(lost) + len(streams)))
}

// Kick ends every session of the identity (by name, as Identity.Name
// reports it) and returns how many there were. The client is told why; it
// may reconnect, so to keep someone out revoke the certificate or change
// the policy and reload.
func (s *Server) Kick(identity string) int {
	s.mu.Lock()
	var victims []*serverSession
	for _, ss := range s.sessions {
		if ss.peer != nil && ss.peer.Name() == identity && !ss.mux.IsClosed() {
			victims = append(victims, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range victims {
		ss.log.Info("session kicked by administrator")
	}
	closeSessions(victims, func(_ int, ss *serverSession) {
		ss.closeWithBye(ctlDenied, "kicked by administrator", fmt.Errorf("%w: kicked by administrator", ErrDenied))
	})
	return len(victims)
}

// closeSessions runs bye for each of sessions in parallel and returns when
// every one has returned. In parallel: a bye waits behind the session's
// earlier writes (up to byeTimeout), so a client that stopped reading
// would otherwise hold up every other client's bye. Stop, Revalidate and
// Kick close their sessions through it.
func closeSessions(sessions []*serverSession, bye func(i int, ss *serverSession)) {
	var wg sync.WaitGroup
	for i, ss := range sessions {
		wg.Go(func() { bye(i, ss) })
	}
	wg.Wait()
}
