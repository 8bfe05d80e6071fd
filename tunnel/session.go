package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/pki"
)

// SessionInfo describes an established session: what each side proved and
// what was agreed. It is what the demo command narrates.
type SessionInfo struct {
	ID      string
	Version int
	Local   net.Addr
	Remote  net.Addr
	// TLS is the negotiated connection state (version, cipher suite,
	// ALPN, the chain the peer presented).
	TLS tls.ConnectionState
	// Peer is the other side's identity as this side verified it;
	// Peer.Issuer names the CA that issued it.
	Peer *pki.Identity
	// PeerChain is the chain the peer presented, leaf first.
	PeerChain []*x509.Certificate
	// VerifiedChain is the path this side's verifier accepted: the peer's
	// leaf, the CA that issued it, ..., and last the root from this side's
	// own CA bundle that anchors it. It answers "which CA vouched for the
	// other side".
	VerifiedChain []*x509.Certificate
	// Self is how the gateway saw this client (client side only).
	Self *HelloIdentity
	// Grants summarises what the gateway's policy allows this identity.
	Grants []string
	Params SessionParams
	// VPN is the VPN configuration the gateway assigned (nil without VPN
	// mode): the client's addresses, routes, DNS and MTU.
	VPN *VPNConfig
	// GSO says the packets stream carries superpackets whole (both sides
	// announced capGSO; see tun.GSO).
	GSO          bool
	PeerSoftware string
	Established  time.Time
	// Stats are the session's counters when the SessionInfo was taken
	// (filled by Server.Sessions; zero in hooks).
	Stats SessionStats
}

// session is one TLS connection carrying yamux, seen from either side.
type session struct {
	id     string
	log    *slog.Logger
	mux    *yamux.Session
	conn   *muxConn
	tuning Tuning
	info   SessionInfo
	peer   *pki.Identity
	chain  []*x509.Certificate
	bufs   *sync.Pool
	ctx    context.Context // cancelled when the session ends
	cancel context.CancelFunc

	ctrl     *yamux.Stream
	ctrlMu   sync.Mutex // serialises writes on ctrl
	peerCaps map[string]bool
	gso      bool        // packets stream frames carry GSO descriptors (capGSO agreed; gateway side)
	udpOn    atomic.Bool // the session's VPN packets travel over UDP now
	ctr      counters

	wg sync.WaitGroup // every goroutine this session starts

	mu        sync.Mutex
	aborts    map[uint32]func() // live forwards by stream id; guarded by mu
	early     map[uint32]bool   // resets for streams not yet in aborts (see abortStream); guarded by mu
	nstreams  int               // data streams being handled; guarded by mu
	draining  bool              // no new data streams; guarded by mu
	drainCh   chan struct{}     // closed when nstreams reaches 0 while draining; guarded by mu
	reason    error             // why the session ended; guarded by mu
	peerBye   *controlMsg       // the peer's bye, if any; guarded by mu
	byeCh     chan struct{}     // closed when a bye arrives
	ctrlDone  chan struct{}     // closed when the control reader has returned (nil before start)
	ended     bool              // close has run: no new goroutines join wg; guarded by mu
	dog       *time.Timer       // the liveness watchdog (see watch); guarded by mu
	pinging   atomic.Bool       // a keepalive ping is in flight
	byeOnce   sync.Once
	closeOnce sync.Once
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newSession(id string, mc *muxConn, mux *yamux.Session, t Tuning, bufs *sync.Pool, logger *slog.Logger) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{
		id: id, conn: mc, mux: mux, tuning: t, bufs: bufs, log: logger,
		ctx: ctx, cancel: cancel,
		aborts: make(map[uint32]func()), byeCh: make(chan struct{}),
	}
}

// start runs the two goroutines every session has, the control reader and
// the stream acceptor, and arms the liveness watchdog, a timer rather than
// a goroutine: an idle session's cost is mostly its goroutines' stacks.
// When the session has ended and its other goroutines have returned, the
// acceptor runs onEnd (if set), so whoever started the session need not
// keep a goroutine waiting for its end.
func (s *session) start(onControl func(*controlMsg), onStream func(*yamux.Stream), onEnd func()) {
	s.ctrlDone = make(chan struct{})
	s.wg.Add(2)
	go func() { defer s.wg.Done(); defer close(s.ctrlDone); s.controlLoop(onControl) }()
	go func() {
		s.acceptLoop(onStream)
		s.wg.Done()
		if onEnd != nil {
			<-s.done()
			onEnd()
		}
	}()
	s.mu.Lock()
	s.dog = time.AfterFunc(s.tuning.KeepAliveInterval, s.watch)
	s.mu.Unlock()
}

func (s *session) done() <-chan struct{} { return s.mux.CloseChan() }

// close ends the session for reason; it does not wait for its goroutines
// (see wait).
func (s *session) close(reason error) {
	s.closeOnce.Do(func() {
		if errors.Is(reason, ErrClosedByPeer) {
			// What looks like the peer's doing may be our connection
			// refusing what the peer sent.
			if rerr := s.conn.readErr(); isPeerAbuse(rerr) {
				reason = rerr
			}
		}
		s.mu.Lock()
		if s.reason == nil {
			s.reason = reason
		}
		s.ended = true
		if s.dog != nil {
			s.dog.Stop()
		}
		s.mu.Unlock()
		s.cancel()
		if s.ctrl != nil {
			// yamux closes its shutdown channel first and marks the
			// streams closed only after the connection is down: until
			// then a blocked Read spins, waking on the closed channel
			// and finding its stream still open (yamux v0.1.2,
			// Stream.Read). A deadline already past makes it return
			// instead; what has arrived is still read first.
			_ = s.ctrl.SetReadDeadline(time.Now())
		}
		s.mux.Close()
	})
}

// closeWithBye tells the peer why before closing.
func (s *session) closeWithBye(code, message string, reason error) {
	// The stream's write deadline bounds only the wait for window, not the
	// wait behind the session's earlier writes: a peer that stopped reading
	// would hold the close for the whole stall timeout. So the bye gets
	// byeTimeout from here, and closing the session releases its writer.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_ = s.sendControlTimeout(&controlMsg{Type: msgBye, Code: code, Message: message}, byeTimeout)
	}()
	t := time.NewTimer(byeTimeout)
	select {
	case <-sent:
	case <-t.C:
	}
	t.Stop()
	s.close(reason)
}

// byeTimeout is how long closeWithBye waits for the bye to go out.
const byeTimeout = time.Second

// wait blocks until every goroutine of the session has returned.
func (s *session) wait() { s.wg.Wait() }

// endReason says why the session ended (or, while it drains, why it is
// ending). For a closed session it first lets the control reader consume
// what arrived before the end, which may be the peer's bye saying why.
func (s *session) endReason() error {
	if s.ctrlDone != nil && s.mux.IsClosed() {
		<-s.ctrlDone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peerBye != nil && (s.reason == nil || errors.Is(s.reason, ErrClosedByPeer)) {
		return &ByeError{Code: s.peerBye.Code, Message: s.peerBye.Message}
	}
	if s.reason != nil {
		return s.reason
	}
	if err := s.conn.readErr(); err != nil {
		return err
	}
	return ErrClosedByPeer
}

// sendControl writes one control message. A peer that does not read its
// control stream for the dead-peer timeout is broken; the session ends.
func (s *session) sendControl(m *controlMsg) error {
	return s.sendControlTimeout(m, s.tuning.DeadPeerTimeout)
}

func (s *session) sendControlTimeout(m *controlMsg, d time.Duration) error {
	if s.mux.IsClosed() || s.ctrl == nil {
		return yamux.ErrSessionShutdown
	}
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	_ = s.ctrl.SetWriteDeadline(time.Now().Add(d))
	err := writeControl(s.ctrl, m)
	_ = s.ctrl.SetWriteDeadline(time.Time{})
	if err != nil && !s.mux.IsClosed() {
		s.close(fmt.Errorf("control stream: %w", err))
	}
	return err
}

func (s *session) controlLoop(handle func(*controlMsg)) {
	for {
		m, err := readControl(s.ctrl)
		if err != nil {
			if errors.Is(err, io.EOF) || s.mux.IsClosed() {
				s.close(ErrClosedByPeer)
			} else {
				s.log.Warn("bad control message; closing session", "err", err)
				s.close(fmt.Errorf("control stream: %w", err))
			}
			return
		}
		switch m.Type {
		case msgReset:
			s.abortStream(m.Stream)
		case msgBye:
			s.mu.Lock()
			s.peerBye = m
			s.mu.Unlock()
			s.byeOnce.Do(func() { close(s.byeCh) })
			s.log.Info("peer is ending the session", "code", m.Code, "message", m.Message)
		default:
			if handle != nil {
				handle(m)
			} else {
				s.log.Debug("ignoring control message", "type", m.Type)
			}
		}
	}
}

func (s *session) acceptLoop(handle func(*yamux.Stream)) {
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			return
		}
		// Counting yamux's streams, not our handlers, means half-closed
		// and aborted streams the peer never finished still count: that
		// is what bounds the memory a peer can make us hold.
		n := s.mux.NumStreams()
		if n > s.tuning.MaxStreams+1+acceptBacklog {
			// A refused stream stays in yamux, with the window
			// AcceptStream granted, until the peer closes its end,
			// which an honest peer does as soon as it reads the
			// refusal. This many outstanding means a peer keeping
			// them on purpose, which nothing else would bound.
			s.log.Warn("peer keeps refused streams open; closing session", "streams", n)
			_ = st.Close()
			s.closeWithBye(ctlLimit, "too many refused streams left open",
				fmt.Errorf("%w: %d streams open, limit %d", ErrLimit, n, s.tuning.MaxStreams))
			return
		}
		if n > s.tuning.MaxStreams+1 { // +1: control
			s.refuseStream(st, CodeLimit, fmt.Sprintf("session limit of %d streams reached", s.tuning.MaxStreams))
			continue
		}
		if !s.streamStart() {
			s.refuseStream(st, CodeShutdown, "session is draining")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.streamDone()
			handle(st)
		}()
	}
}

// refuseStream answers a stream we will not serve, inline: the answer is a
// few bytes into a fresh window, so it cannot block for long, and not
// spawning a goroutine keeps a flood of streams from costing more than the
// accept loop itself.
func (s *session) refuseStream(st *yamux.Stream, code Code, msg string) {
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = st.Write(streamReply{Code: code, Message: msg}.marshal())
	_ = st.Close()
}

// streamStart counts a data stream in; false once the session is draining.
func (s *session) streamStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.nstreams++
	return true
}

func (s *session) streamDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nstreams--
	if s.nstreams == 0 && s.drainCh != nil {
		close(s.drainCh)
		s.drainCh = nil
	}
}

// drain stops new data streams; the channel closes when the last one ends.
func (s *session) drain() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	ch := make(chan struct{})
	if s.nstreams == 0 {
		close(ch)
	} else {
		if s.drainCh != nil {
			close(s.drainCh)
		}
		s.drainCh = ch
	}
	return ch
}

// byeReceived reports whether the peer has announced the end.
func (s *session) byeReceived() bool {
	select {
	case <-s.byeCh:
		return true
	default:
		return false
	}
}

// watch is the liveness watchdog, run by the timer start arms: it ends the
// session when the peer has sent nothing for DeadPeerTimeout, pings it
// after KeepAliveInterval of silence so that a live but idle peer always
// has something to answer, and sets itself to run again when the next of
// those could be due.
func (s *session) watch() {
	if s.mux.IsClosed() {
		return
	}
	idle := s.conn.idle()
	if idle >= s.tuning.DeadPeerTimeout {
		s.log.Warn("peer stopped responding; closing session", "silent_for", idle.Round(time.Millisecond))
		s.close(fmt.Errorf("%w: nothing received for %s", ErrPeerDead, idle.Round(time.Millisecond)))
		return
	}
	if idle >= s.tuning.KeepAliveInterval && s.pinging.CompareAndSwap(false, true) {
		// The ping waits for its answer, so it gets a goroutine, which
		// joins wg only while the session is live: wait() must not
		// race a new member.
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer s.pinging.Store(false)
			s.ping() // the answer shows up as received bytes
		}()
	}
	next := s.tuning.DeadPeerTimeout - idle
	if idle < s.tuning.KeepAliveInterval {
		next = min(next, s.tuning.KeepAliveInterval-idle)
	} else {
		next = min(next, s.tuning.KeepAliveInterval)
	}
	s.mu.Lock()
	if !s.ended {
		s.dog.Reset(next)
	}
	s.mu.Unlock()
}

// abortStream handles the peer's reset for stream id. A reset for a
// stream not being proxied yet is kept for proxy; the set is bounded, so a
// peer resetting streams that never come cannot grow it.
func (s *session) abortStream(id uint32) {
	s.mu.Lock()
	abort := s.aborts[id]
	if abort == nil {
		if s.early == nil || len(s.early) >= maxEarlyResets {
			s.early = make(map[uint32]bool)
		}
		s.early[id] = true
	}
	s.mu.Unlock()
	if abort != nil {
		abort()
	}
}

// maxEarlyResets bounds the resets kept for streams not proxied yet.
const maxEarlyResets = 256

// resetStream gives up on st before proxying it: closed here, and the peer
// told to abort its end (a connection it may be dialing or have dialed),
// which a FIN alone would leave open until the far end closes.
func (s *session) resetStream(st *yamux.Stream) {
	_ = st.Close()
	if s.peerCaps[capReset] && !s.mux.IsClosed() {
		_ = s.sendControl(&controlMsg{Type: msgReset, Stream: st.StreamID()})
	}
}

// copyBuf copies with a pooled buffer. The wrappers hide ReadFrom/WriteTo
// so that io.CopyBuffer really uses our buffer instead of allocating its
// own (net.TCPConn's fallback paths do).
func (s *session) copyBuf(dst io.Writer, src io.Reader) error {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	return err
}

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

// proxy joins a forwarded connection and its stream until both directions
// are done. An orderly end in one direction (EOF) is passed on as a
// half-close: FIN on the stream, CloseWrite on the TCP side. Anything else
// aborts both directions on both sides: the TCP side is reset, and a reset
// message tells the peer to do the same with its end, so that neither side
// is left blocked on a stream the other has given up on.
func (s *session) proxy(st *yamux.Stream, c net.Conn) {
	id := st.StreamID()
	var once sync.Once
	abort := func(tellPeer bool) {
		once.Do(func() {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset, so the application sees a failure, not an end
			}
			_ = c.Close()
			_ = st.SetReadDeadline(time.Now()) // wakes a Read no FIN will end
			_ = st.Close()
			if tellPeer && s.peerCaps[capReset] && !s.mux.IsClosed() {
				_ = s.sendControl(&controlMsg{Type: msgReset, Stream: id})
			}
		})
	}
	s.mu.Lock()
	s.aborts[id] = func() { abort(false) }
	reset := s.early[id]
	delete(s.early, id)
	s.mu.Unlock()
	if reset {
		abort(false) // the peer gave up before we got here
	}
	// When the session dies, its streams end with a plain EOF, which
	// must not reach the application as an orderly end; and a direction
	// blocked reading the local side would never notice at all.
	stop := context.AfterFunc(s.ctx, func() { abort(false) })
	defer func() {
		stop()
		s.mu.Lock()
		delete(s.aborts, id)
		s.mu.Unlock()
	}()

	// Small messages from the peer go to c straight from the receive
	// loop while the goroutine below waits for data (deliver_unix.go).
	if d := deliverTo(c); d != nil {
		st.SetDeliver(func(p []byte) int {
			n := d(p)
			if n > 0 {
				s.conn.delivered(id, n)
			}
			return n
		})
	}
	// The second direction runs in its own goroutine, which proxy waits
	// for before returning: the caller's owner owns both.
	down := make(chan struct{})
	go func() {
		defer close(down)
		if err := s.copyBuf(c, s.conn.consuming(st, id)); err != nil || s.mux.IsClosed() {
			s.logAbort(id, "from peer", err)
			abort(true)
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	if err := s.copyBuf(pacedWriter{st, s.conn}, c); err != nil {
		s.logAbort(id, "to peer", err)
		abort(true)
	} else {
		_ = st.Close() // FIN: reads continue until the peer's FIN
	}
	<-down
	_ = c.Close()
	_ = st.Close()
}

// logAbort notes why a stream was aborted, unless it is the noise of a
// connection or session going away.
func (s *session) logAbort(id uint32, dir string, err error) {
	if !isClosedErr(err) && !errors.Is(err, yamux.ErrTimeout) {
		s.log.Debug("stream aborted", "stream", id, "direction", dir, "err", err)
	}
}

// isClosedErr reports errors that only mean "the other end is gone",
// which are not worth a log line at shutdown.
func isClosedErr(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// dialReply turns a local dial error into the reply sent to the peer.
func dialReply(err error) streamReply {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return streamReply{Code: CodeTimeout, Message: "resolving " + dnsErr.Name + ": timed out"}
	case errors.As(err, &dnsErr):
		return streamReply{Code: CodeNotFound, Message: dnsErr.Error()}
	case errors.Is(err, syscall.ECONNREFUSED):
		return streamReply{Code: CodeRefused, Message: errMessage(err)}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return streamReply{Code: CodeUnreachable, Message: errMessage(err)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), isTimeout(err):
		return streamReply{Code: CodeTimeout, Message: errMessage(err)}
	}
	return streamReply{Code: CodeDialFailed, Message: errMessage(err)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errMessage keeps the part of a dial error the peer can use: the
// syscall reason, not our local socket addresses.
func errMessage(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
