package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/socks5"
)

// The client's side of the port forwards: -L and -D listeners stay open
// across reconnects (acceptLocal); each connection, or each SOCKS5 request
// (serveSOCKS), becomes a connect stream on the current session (open,
// openConnect). For -R the client asks the gateway to listen
// (registerRemote), hears its answer (handleControl) and dials its local
// target for every reverse stream the gateway opens (handleStream).

type localListener struct {
	fwd Forward
	ln  net.Listener
}

type remoteForward struct {
	fwd   Forward
	bound string // address on the gateway, once it answered
}

// ForwardStatus describes one configured forward.
type ForwardStatus struct {
	Forward
	// Local is the client-side listener (-L, -D).
	Local net.Addr
	// Remote is where the gateway listens (-R), once it has said so.
	Remote string
}

// Forwards reports each forward with its listening addresses.
func (c *Client) Forwards() []ForwardStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ForwardStatus
	li := 0
	for i, f := range c.cfg.Forwards {
		st := ForwardStatus{Forward: f}
		if f.Kind == ForwardRemote {
			st.Remote = c.remote[uint32(i+1)].bound
		} else if li < len(c.locals) {
			st.Local = c.locals[li].ln.Addr()
			li++
		}
		out = append(out, st)
	}
	return out
}

// acceptLocal serves one local (-L or -D) listener until it is closed.
func (c *Client) acceptLocal(l *localListener) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			c.log.Warn("accept failed; backing off", "forward", l.fwd.String(), "err", err)
			if !c.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			switch l.fwd.Kind {
			case ForwardLocal:
				c.serveLocal(l.fwd, conn)
			case ForwardDynamic:
				c.serveSOCKS(l.fwd, conn)
			}
		}()
	}
}

// serveLocal carries one -L connection to the gateway.
func (c *Client) serveLocal(f Forward, conn net.Conn) {
	host, portStr, _ := net.SplitHostPort(f.Target)
	port, _ := parsePort(portStr, false)
	cs, st, _, err := c.open(host, port)
	if err != nil {
		c.log.Info("forward refused", "forward", f.String(), "from", conn.RemoteAddr().String(), "err", err)
		refuseLocal(conn)
		return
	}
	defer cs.streamDone()
	cs.proxy(st, conn)
}

// serveSOCKS serves one -D connection: SOCKS5 negotiation here, the dial
// at the gateway, the gateway's answer translated into the SOCKS reply.
func (c *Client) serveSOCKS(f Forward, conn net.Conn) {
	req, err := socks5.Accept(conn, socks5.Options{Authenticate: c.cfg.SOCKSAuth, Timeout: c.cfg.HandshakeTimeout})
	if err != nil {
		// Accept has already answered a client that spoke SOCKS5.
		c.log.Debug("SOCKS request refused", "forward", f.String(), "from", conn.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	host := req.Host
	if host == "" {
		host = req.Addr.String()
	}
	cs, st, rep, err := c.open(host, req.Port)
	if err != nil {
		c.log.Info("SOCKS connect refused", "forward", f.String(), "target", req.Address(), "err", err)
		_ = req.Reply(socksReply(err), netip.AddrPort{})
		conn.Close()
		return
	}
	defer cs.streamDone()
	// The gateway's side of the connection, as RFC 1928 asks for
	// BND.ADDR; zero if it did not say.
	bound, _ := netip.ParseAddrPort(rep.Bound)
	if err := req.Reply(socks5.ReplySucceeded, bound); err != nil {
		cs.resetStream(st) // the gateway's connection to the target goes too
		conn.Close()
		return
	}
	cs.proxy(st, conn)
}

// socksReply maps why a connect failed to the nearest SOCKS5 reply.
func socksReply(err error) socks5.ReplyCode {
	var se *StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case CodeDenied:
			return socks5.ReplyNotAllowed
		case CodeRefused:
			return socks5.ReplyConnectionRefused
		case CodeUnreachable, CodeNotFound:
			return socks5.ReplyHostUnreachable
		case CodeTimeout:
			return socks5.ReplyTTLExpired
		}
		return socks5.ReplyGeneralFailure
	}
	if errors.Is(err, ErrUnreachable) { // no session to the gateway
		return socks5.ReplyNetworkUnreachable
	}
	return socks5.ReplyFor(err)
}

// refuseLocal closes a local connection we cannot serve with a reset, so
// the application sees a failure rather than an empty answer.
func refuseLocal(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// open gets a session (waiting for one if the tunnel is down) and opens a
// connect stream on it. On success the stream is counted in the session,
// and the caller must call streamDone.
func (c *Client) open(host string, port uint16) (*clientSession, *yamux.Stream, streamReply, error) {
	for attempt := 0; ; attempt++ {
		cs, err := c.session(c.ctx)
		if err != nil {
			return nil, nil, streamReply{}, err
		}
		if !cs.streamStart() {
			continue // draining because we are stopping: session() says so next
		}
		st, rep, err := cs.openConnect(host, port)
		if err != nil {
			cs.streamDone()
			// A session that died under us is retried once on the next;
			// the gateway's answer is final.
			var se *StreamError
			if !errors.As(err, &se) && cs.mux.IsClosed() && attempt == 0 {
				continue
			}
			return nil, nil, rep, err
		}
		return cs, st, rep, nil
	}
}

// openConnect opens a stream asking the gateway to dial host:port and
// waits for its answer.
func (cs *clientSession) openConnect(host string, port uint16) (*yamux.Stream, streamReply, error) {
	hdr, err := streamHeader{Kind: KindConnect, Host: host, Port: port}.marshal()
	if err != nil {
		return nil, streamReply{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	st, err := cs.mux.OpenStream()
	if err != nil {
		return nil, streamReply{}, err
	}
	cs.ctr.streamsOpened.Add(1)
	_ = st.SetDeadline(time.Now().Add(cs.replyTimeout()))
	if _, err := st.Write(hdr); err != nil {
		cs.resetStream(st)
		return nil, streamReply{}, err
	}
	rep, err := readStreamReply(st)
	if err != nil {
		// No answer in time: the gateway may still be dialing, or have
		// dialed; a reset makes it drop that connection.
		cs.resetStream(st)
		return nil, rep, err
	}
	if err := rep.err(); err != nil {
		st.Close() // refused: the gateway holds nothing
		return nil, rep, err
	}
	_ = st.SetDeadline(time.Time{})
	return st, rep, nil
}

// registerRemote asks the gateway for every -R listener.
func (cs *clientSession) registerRemote() {
	if !cs.peerCaps[capReverse] {
		return
	}
	c := cs.client
	c.mu.Lock()
	ids := make(map[uint32]Forward, len(c.remote))
	for id, rf := range c.remote {
		ids[id] = rf.fwd
	}
	c.mu.Unlock()
	for id, f := range ids {
		if err := cs.sendControl(&controlMsg{Type: msgListen, ID: id, Bind: f.Listen}); err != nil {
			return
		}
	}
}

// handleControl serves the gateway's control messages after the hello.
func (cs *clientSession) handleControl(m *controlMsg) {
	c := cs.client
	switch m.Type {
	case msgListenOK, msgListenError:
		c.mu.Lock()
		rf := c.remote[m.ID]
		var f Forward
		if rf != nil {
			f = rf.fwd
			if m.Type == msgListenOK {
				rf.bound = m.Bound
			} else {
				rf.bound = "" // refused, or closed by a policy reload
			}
		}
		c.mu.Unlock()
		if rf == nil {
			cs.log.Debug("answer for unknown remote listener", "id", m.ID)
			return
		}
		var err error
		if m.Type == msgListenOK {
			cs.log.Info("remote forward listening on gateway", "forward", f.String(), "addr", m.Bound)
		} else {
			err = &HelloError{Code: m.Code, Message: m.Message}
			cs.log.Warn("gateway refused remote forward", "forward", f.String(), "code", m.Code, "reason", m.Message)
		}
		if c.cfg.OnRemoteListen != nil {
			c.cfg.OnRemoteListen(f, m.Bound, err)
		}
	case msgRekey, msgRekeyAck:
		cs.rekeyControl(cs.udpKeys, m)
	default:
		cs.log.Debug("ignoring control message", "type", m.Type)
	}
}

// handleStream serves a stream the gateway opened: a connection accepted
// on one of our remote listeners.
func (cs *clientSession) handleStream(st *yamux.Stream) {
	c := cs.client
	_ = st.SetReadDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	h, err := readStreamHeader(st)
	if err != nil {
		cs.refuseStream(st, CodeBadRequest, "malformed stream header")
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	if h.Kind != KindReverse {
		cs.refuseStream(st, CodeUnsupported, "client serves only reverse streams")
		return
	}
	c.mu.Lock()
	rf := c.remote[h.Listener]
	c.mu.Unlock()
	if rf == nil {
		cs.refuseStream(st, CodeUnsupported, fmt.Sprintf("no remote forward %d", h.Listener))
		return
	}
	origin := net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port)))
	d := net.Dialer{Timeout: c.cfg.DialTimeout}
	conn, err := d.DialContext(cs.ctx, "tcp", rf.fwd.Target)
	if err != nil {
		rep := dialReply(err)
		cs.log.Info("remote forward: local dial failed", "forward", rf.fwd.String(), "origin", origin, "err", err)
		cs.refuseStream(st, rep.Code, rep.Message)
		return
	}
	_ = st.SetWriteDeadline(time.Now().Add(cs.tuning.DeadPeerTimeout))
	if _, err := st.Write(streamReply{Code: CodeOK, Bound: conn.LocalAddr().String()}.marshal()); err != nil {
		conn.Close()
		st.Close()
		return
	}
	_ = st.SetWriteDeadline(time.Time{})
	cs.log.Debug("remote forward connection", "forward", rf.fwd.String(), "origin", origin, "stream", st.StreamID())
	cs.proxy(st, conn)
}
