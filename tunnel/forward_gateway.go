package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

// The gateway's side of the port forwards: for -L and -D it dials the
// target a client's connect stream names (handleConnect, dial), asking the
// policy about every address; for -R it holds listeners on the client's
// behalf (listen, acceptRemote) and carries each connection back on a
// reverse stream (serveRemote). What a live forward reaches is tracked
// (trackForward) so that a policy reload can ask again (recheckForwards,
// admission.go).

func (ss *serverSession) handleConnect(st *yamux.Stream, h streamHeader) {
	target := net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port)))
	conn, rep := ss.srv.dial(ss.ctx, ss.peer, h.Host, h.Port)
	if rep.Code != CodeOK {
		ss.log.Info("stream refused", "stream", st.StreamID(), "target", target, "code", rep.Code.String(), "reason", rep.Message)
		ss.refuseStream(st, rep.Code, rep.Message)
		return
	}
	ss.conn.accepted(st.StreamID())
	_ = st.SetWriteDeadline(time.Now().Add(ss.tuning.DeadPeerTimeout))
	if _, err := st.Write(rep.marshal()); err != nil {
		conn.Close()
		st.Close()
		return
	}
	_ = st.SetWriteDeadline(time.Time{})
	ss.log.Debug("stream open", "stream", st.StreamID(), "target", target, "addr", conn.RemoteAddr().String())
	ref := forwardRef{addr: conn.RemoteAddr().(*net.TCPAddr).AddrPort()}
	ref.addr = netip.AddrPortFrom(ref.addr.Addr().Unmap(), ref.addr.Port())
	if _, err := netip.ParseAddr(h.Host); err != nil {
		ref.host = h.Host
	}
	defer ss.trackForward(st.StreamID(), ref)()
	ss.proxy(st, conn)
}

// dial resolves host, asks the policy about every address it resolves to,
// and connects to the first allowed one that answers. Checking each
// resolved address means a DNS answer cannot widen what a rule allows.
func (s *Server) dial(ctx context.Context, id *pki.Identity, host string, port uint16) (net.Conn, streamReply) {
	if err := checkHost(host); err != nil {
		return nil, streamReply{Code: CodeBadRequest, Message: err.Error()}
	}
	if port == 0 {
		return nil, streamReply{Code: CodeBadRequest, Message: "port 0"}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()

	var addrs []netip.Addr
	name := host
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs, name = []netip.Addr{ip.Unmap()}, ""
	} else {
		found, err := s.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, dialReply(err)
		}
		for _, a := range found {
			addrs = append(addrs, a.Unmap())
		}
		if len(addrs) == 0 {
			return nil, streamReply{Code: CodeNotFound, Message: host + ": no addresses"}
		}
	}

	pol := s.pol()
	var allowed []netip.Addr
	var denied policy.Decision
	for _, a := range addrs {
		d := s.dialDecision(pol, id, name, a, port)
		if d.Allow {
			allowed = append(allowed, a)
		} else if denied.Rule == "" {
			denied = d
		}
	}
	if len(allowed) == 0 {
		msg := fmt.Sprintf("%s port %d (rule %q)", host, port, denied.Rule)
		if denied.Reason != "" {
			msg += ": " + denied.Reason
		}
		return nil, streamReply{Code: CodeDenied, Message: msg}
	}

	var lastErr error
	var d net.Dialer
	for i, a := range allowed {
		// Split what is left of the timeout between the remaining
		// addresses, so one black hole does not use it all.
		actx := ctx
		if dl, ok := ctx.Deadline(); ok && len(allowed)-i > 1 {
			var c context.CancelFunc
			actx, c = context.WithTimeout(ctx, time.Until(dl)/time.Duration(len(allowed)-i))
			defer c()
		}
		conn, err := d.DialContext(actx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return conn, streamReply{Code: CodeOK, Bound: conn.LocalAddr().String()}
		}
		lastErr = err
	}
	return nil, dialReply(lastErr)
}

// dialDecision asks pol whether id may have the gateway connect to
// addr:port (resolved from name, if set). Beyond the policy's own answer,
// an address in the VPN pools is another client's, which only
// client_to_client grants, whatever the rules say: otherwise a forward
// would be a way around it.
func (s *Server) dialDecision(pol Policy, id *pki.Identity, name string, addr netip.Addr, port uint16) policy.Decision {
	if v := s.cfg.VPN; v != nil && !v.ClientToClient && v.Pool.Contains(addr) {
		return policy.Decision{Rule: "client_to_client = false", Reason: "client-to-client"}
	}
	return pol.Dial(id, policy.Target{Host: name, Addr: addr, Port: port, Proto: "tcp", Local: s.local.contains(addr)})
}

// remoteListener is a listener the gateway holds for a client's -R forward.
type remoteListener struct {
	id    uint32
	ln    net.Listener
	bound netip.AddrPort // what the policy allowed: a reload asks again
}

// forwardRef is what a live forwarded stream reaches, kept so that a policy
// reload can ask about it again: the target the gateway dialed for a
// connect stream, or the remote listener a reverse stream came in on.
type forwardRef struct {
	host     string // the host name the client asked for; "" for an address
	addr     netip.AddrPort
	listener uint32 // non-zero for a reverse stream
}

// trackForward records a forwarded stream until the returned func runs.
func (ss *serverSession) trackForward(id uint32, ref forwardRef) func() {
	ss.mu.Lock()
	if ss.forwards == nil {
		ss.forwards = make(map[uint32]forwardRef)
	}
	ss.forwards[id] = ref
	ss.mu.Unlock()
	return func() {
		ss.mu.Lock()
		delete(ss.forwards, id)
		ss.mu.Unlock()
	}
}

// handleControl serves the client's control messages after the hello.
func (ss *serverSession) handleControl(m *controlMsg) {
	switch m.Type {
	case msgListen:
		bound, code, err := ss.listen(m.ID, m.Bind)
		if err != nil {
			ss.log.Info("remote listen refused", "id", m.ID, "bind", m.Bind, "code", code, "err", err)
			_ = ss.sendControl(&controlMsg{Type: msgListenError, ID: m.ID, Code: code, Message: err.Error()})
			return
		}
		ss.log.Info("remote listener open", "id", m.ID, "addr", bound)
		_ = ss.sendControl(&controlMsg{Type: msgListenOK, ID: m.ID, Bound: bound})
	case msgUnlisten:
		ss.mu.Lock()
		rl := ss.listeners[m.ID]
		delete(ss.listeners, m.ID)
		ss.mu.Unlock()
		if rl != nil {
			rl.ln.Close()
		}
	case msgPath:
		if ss.udp != nil {
			ss.udp.setPath(m.Path)
		}
	case msgRekey, msgRekeyAck:
		var keys *udpKeys
		if ss.udp != nil {
			keys = ss.udp.keys
		}
		ss.rekeyControl(keys, m)
	default:
		ss.log.Debug("ignoring control message", "type", m.Type)
	}
}

// listen opens a remote (-R) listener if the policy allows the bind.
func (ss *serverSession) listen(id uint32, bind string) (string, string, error) {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return "", ctlBadRequest, fmt.Errorf("%w: bind %q: %w", ErrBadRequest, bind, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "", ctlBadRequest, fmt.Errorf("%w: bind address %q is not an IP address", ErrBadRequest, host)
	}
	addr = addr.Unmap()
	port, err := parsePort(portStr, true)
	if err != nil {
		return "", ctlBadRequest, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if id == 0 {
		return "", ctlBadRequest, fmt.Errorf("%w: listener id 0", ErrBadRequest)
	}
	pol := ss.srv.pol()
	// Port 0 asks for any free port; the policy is asked about the port
	// actually bound, right after binding and before accepting anything.
	if port != 0 {
		if d := pol.Bind(ss.peer, addr, port); !d.Allow {
			return "", ctlDenied, fmt.Errorf("%w: bind %s (rule %q)", ErrDenied, bind, d.Rule)
		}
	}
	ss.mu.Lock()
	_, dup := ss.listeners[id]
	n := len(ss.listeners)
	draining := ss.draining
	ss.mu.Unlock()
	switch {
	case draining:
		return "", ctlShutdown, ErrShutdown
	case dup:
		return "", ctlBadRequest, fmt.Errorf("%w: listener id %d already in use", ErrBadRequest, id)
	case n >= ss.srv.cfg.MaxListeners:
		return "", ctlLimit, fmt.Errorf("%w: at most %d remote listeners per session", ErrLimit, ss.srv.cfg.MaxListeners)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return "", ctlFailed, err
	}
	bound := ln.Addr().(*net.TCPAddr).AddrPort()
	if port == 0 {
		if d := pol.Bind(ss.peer, addr, bound.Port()); !d.Allow {
			ln.Close()
			return "", ctlDenied, fmt.Errorf("%w: bind %s (rule %q)", ErrDenied, bound, d.Rule)
		}
	}
	rl := &remoteListener{id: id, ln: ln, bound: netip.AddrPortFrom(addr, bound.Port())}
	ss.mu.Lock()
	if ss.draining || ss.listeners == nil {
		ss.mu.Unlock()
		ln.Close()
		return "", ctlShutdown, ErrShutdown
	}
	ss.listeners[id] = rl
	ss.mu.Unlock()
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		ss.acceptRemote(rl)
	}()
	return bound.String(), "", nil
}

func (ss *serverSession) acceptRemote(rl *remoteListener) {
	var backoff time.Duration
	for {
		c, err := rl.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-ss.done():
				return
			}
		}
		backoff = 0
		if ss.mux.NumStreams() > ss.tuning.MaxStreams || !ss.streamStart() {
			c.Close()
			continue
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			defer ss.streamDone()
			ss.serveRemote(rl.id, c)
		}()
	}
}

// serveRemote carries one connection accepted on a remote listener back
// to the client, which dials its local target and answers.
func (ss *serverSession) serveRemote(id uint32, c net.Conn) {
	origin := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	st, err := ss.mux.OpenStream()
	if err != nil {
		c.Close()
		return
	}
	defer ss.conn.streamClosed(st.StreamID())
	hdr, _ := streamHeader{Kind: KindReverse, Listener: id, Host: origin.Addr().Unmap().String(), Port: origin.Port()}.marshal()
	_ = st.SetDeadline(time.Now().Add(ss.srv.cfg.DialTimeout + ss.tuning.DeadPeerTimeout))
	if _, err := st.Write(hdr); err != nil {
		c.Close()
		st.Close()
		return
	}
	rep, err := readStreamReply(st)
	if err == nil {
		err = rep.err()
	}
	if err != nil {
		ss.log.Info("remote connection refused by client", "listener", id, "origin", origin.String(), "err", err)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		st.Close()
		return
	}
	_ = st.SetDeadline(time.Time{})
	defer ss.trackForward(st.StreamID(), forwardRef{listener: id})()
	ss.proxy(st, c)
}

// closeListeners closes every remote listener; no more are accepted.
func (ss *serverSession) closeListeners() {
	ss.mu.Lock()
	ls := ss.listeners
	ss.listeners = nil
	ss.mu.Unlock()
	for _, rl := range ls {
		rl.ln.Close()
	}
}
