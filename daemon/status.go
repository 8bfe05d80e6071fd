package daemon

// The daemon side of `twoway status` and `twoway kick`: snapshots of the
// running gateway or client in the control package's form.

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/expiry"
	"github.com/twoway/twoway/internal/buildinfo"
	"github.com/twoway/twoway/renew"
	"github.com/twoway/twoway/tunnel"
)

// certificates describes the daemon's own certificate, its chain and the
// CA bundle from creds at now.
func certificates(creds expiry.Credentials, now time.Time) []control.Certificate {
	var out []control.Certificate
	for _, c := range expiry.FromCredentials(creds)() {
		out = append(out, control.CertificateOf(c.Which, c.Cert, now))
	}
	return out
}

// sessionStatus converts a tunnel session into its control form.
func sessionStatus(info tunnel.SessionInfo, now time.Time) control.Session {
	cs := control.NewSession(info.ID, info.Peer, now)
	cs.SetChain(info.VerifiedChain, now)
	if info.Remote != nil {
		cs.Remote = info.Remote.String()
	}
	cs.Since = info.Established
	cs.Resumed = info.TLS.DidResume
	if info.VPN != nil {
		cs.Addresses = stringsOf(info.VPN.Addresses)
		cs.GSO = info.GSO
	}
	applyStats(&cs, info.Stats)
	return cs
}

// gatewayStatus is daemon.Server's control snapshot.
func gatewayStatus(started time.Time, ts *tunnel.Server, creds expiry.Credentials) control.Status {
	now := time.Now()
	st := control.Status{
		Role: config.RoleServer, Version: buildinfo.Get().Version, PID: os.Getpid(),
		Started: started, Now: now, Listen: []string{ts.Addr().String()},
		Certificates: certificates(creds, now),
		Sessions:     []control.Session{},
	}
	if v := creds.Verifier(); v != nil {
		for _, crl := range v.CRLs() {
			st.CRLs = append(st.CRLs, control.CRLOf(crl, now))
		}
	}
	for _, info := range ts.Sessions() {
		st.Sessions = append(st.Sessions, sessionStatus(info, now))
	}
	tot := ts.Totals()
	st.Totals.BytesIn, st.Totals.BytesOut = tot.BytesIn, tot.BytesOut
	st.Totals.PacketsIn, st.Totals.PacketsOut = tot.PacketsIn, tot.PacketsOut
	st.Totals.StreamsOpened = tot.StreamsOpened
	st.Totals.PolicyClosed = tot.PolicyClosed
	vs := ts.VPNStats()
	st.Totals.ECNMarked = vs.Marked
	st.Totals.Dropped = map[string]uint64{
		"malformed": vs.Malformed, "link_local": vs.LinkLocal, "spoof": vs.Spoof,
		"client_to_client": vs.ClientToClient, "policy": vs.Policy, "no_route": vs.NoRoute,
		"queue": vs.Queue, "lan_error": vs.LANError,
	}
	us := ts.UDPStats()
	st.Totals.UDPIn, st.Totals.UDPOut, st.Totals.UDPRoamed = us.DatagramsIn, us.DatagramsOut, us.Roamed
	if len(us.Dropped) > 0 {
		st.Totals.UDPDropped = us.Dropped
	}
	return st
}

// clientState follows a client's sessions through its hooks, since the
// tunnel client keeps no history: chain it into ClientHooks.
type clientState struct {
	mu         sync.Mutex
	started    time.Time
	cur        *tunnel.SessionInfo // guarded by mu
	sessions   int                 // guarded by mu
	lastErr    string              // guarded by mu
	lastRemote string              // guarded by mu
	rfail      map[string]string   // -R listen address -> gateway's refusal; guarded by mu
	renewer    *renew.Renewer      // nil when renewal is off; set before Start
}

func (c *clientState) setStarted(t time.Time) {
	c.mu.Lock()
	c.started = t
	c.mu.Unlock()
}

// chain returns hooks that update c before calling the caller's.
func (c *clientState) chain(h ClientHooks) ClientHooks {
	next := h
	h.OnSession = func(info tunnel.SessionInfo) {
		c.onSession(info)
		if next.OnSession != nil {
			next.OnSession(info)
		}
	}
	h.OnDisconnect = func(err error) {
		c.onDisconnect(err)
		if next.OnDisconnect != nil {
			next.OnDisconnect(err)
		}
	}
	h.OnConnectError = func(err error) {
		c.onConnectError(err)
		if next.OnConnectError != nil {
			next.OnConnectError(err)
		}
	}
	h.OnRemoteListen = func(f tunnel.Forward, bound string, err error) {
		c.onRemoteListen(f, bound, err)
		if next.OnRemoteListen != nil {
			next.OnRemoteListen(f, bound, err)
		}
	}
	return h
}

// onConnectError records why the client cannot connect, for status: a
// client that never got a session (a proxy refusing it, a gateway
// refusing its certificate) has no disconnect to say why.
func (c *clientState) onConnectError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err.Error()
}

func (c *clientState) onRemoteListen(f tunnel.Forward, _ string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rfail == nil {
		c.rfail = make(map[string]string)
	}
	if err != nil {
		c.rfail[f.Listen] = err.Error()
	} else {
		delete(c.rfail, f.Listen)
	}
}

func (c *clientState) onSession(info tunnel.SessionInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = &info
	c.sessions++
	if info.Remote != nil {
		c.lastRemote = info.Remote.String()
	}
}

func (c *clientState) onDisconnect(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = nil
	if err != nil {
		c.lastErr = err.Error()
	}
}

// status is daemon.Client's control snapshot.
func (c *clientState) status(tc *tunnel.Client, creds expiry.Credentials) control.Status {
	now := time.Now()
	st := control.Status{
		Role: config.RoleClient, Version: buildinfo.Get().Version, PID: os.Getpid(),
		Now: now, Certificates: certificates(creds, now),
		Sessions: []control.Session{},
	}
	c.mu.Lock()
	st.Started = c.started
	st.Endpoint = c.lastRemote
	if c.cur != nil {
		cs := sessionStatus(*c.cur, now)
		if live, ok := tc.Stats(); ok {
			applyStats(&cs, live)
			// A client's totals are its current session's: each reconnect
			// starts a new one.
			st.Totals.BytesIn, st.Totals.BytesOut = live.BytesIn, live.BytesOut
			st.Totals.PacketsIn, st.Totals.PacketsOut = live.PacketsIn, live.PacketsOut
			st.Totals.StreamsOpened = live.StreamsOpened
		}
		cs.Reconnects = c.sessions - 1
		cs.LastError = c.lastErr
		st.Sessions = append(st.Sessions, cs)
	}
	// The packet queue and the UDP counters outlive sessions.
	qs := tc.QueueStats()
	st.Totals.ECNMarked = qs.Marked
	if qs.Dropped > 0 {
		st.Totals.Dropped = map[string]uint64{"queue": qs.Dropped}
	}
	us := tc.UDPStats()
	st.Totals.UDPIn, st.Totals.UDPOut = us.DatagramsIn, us.DatagramsOut
	if len(us.Dropped) > 0 {
		st.Totals.UDPDropped = us.Dropped
	}
	if c.renewer != nil {
		r := c.renewer.Status()
		st.Renewal = &control.Renewal{Next: r.Next, LastAttempt: r.LastAttempt, LastOutcome: r.LastOutcome, LastError: r.LastError, Failures: r.Failures}
	}
	if kept, ok := tc.KeptVPN(); ok {
		st.KeptVPN = &control.KeptVPN{Addresses: stringsOf(kept.Addresses), Routes: stringsOf(kept.Routes)}
	}
	rfail := make(map[string]string, len(c.rfail))
	for k, v := range c.rfail {
		rfail[k] = v
	}
	c.mu.Unlock()
	for _, f := range tc.Forwards() {
		cf := control.Forward{Listen: f.Listen, Target: f.Target, State: control.ForwardListening}
		switch f.Kind {
		case tunnel.ForwardLocal:
			cf.Kind = "local"
		case tunnel.ForwardRemote:
			cf.Kind = "remote"
		case tunnel.ForwardDynamic:
			cf.Kind = "dynamic"
		}
		if f.Local != nil {
			cf.Bound = f.Local.String()
		}
		if f.Kind == tunnel.ForwardRemote {
			cf.Bound = f.Remote
			if msg, ok := rfail[f.Listen]; ok {
				cf.State, cf.Error = control.ForwardFailed, msg
			} else if f.Remote == "" {
				cf.State = control.ForwardPending
			}
		}
		st.Forwards = append(st.Forwards, cf)
	}
	return st
}

func applyStats(cs *control.Session, st tunnel.SessionStats) {
	cs.BytesIn, cs.BytesOut = st.BytesIn, st.BytesOut
	cs.PacketsIn, cs.PacketsOut = st.PacketsIn, st.PacketsOut
	cs.Streams = max(st.Streams-1, 0) // not the control stream
	cs.Path = st.Path
	cs.PathQueueMillis = float64(st.PathQueue) / float64(time.Millisecond)
	if st.RTT > 0 {
		cs.RTTMillis = float64(st.RTT) / float64(time.Millisecond)
	}
}

// stringsOf formats each element with its String method.
func stringsOf[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}
