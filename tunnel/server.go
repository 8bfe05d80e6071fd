package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/router"
)

// Resolver looks up the addresses of a target name. *net.Resolver
// implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ServerConfig configures a gateway. Zero values mean the documented
// defaults.
type ServerConfig struct {
	// Listen is the address to accept clients on, e.g. ":8443".
	Listen string
	// Listener, if set, is used instead of Listen (socket activation,
	// tests). The server closes it on Stop.
	Listener net.Listener
	// Credentials supply the gateway certificate and the client-CA
	// verifier (a *pki.Store).
	Credentials Credentials
	// Policy decides admission, dials and binds. Replace it with
	// SetPolicy, then call Revalidate.
	Policy Policy
	// Tuning of the multiplexer; see DefaultTuning.
	Tuning Tuning

	// HandshakeTimeout bounds the TLS handshake plus the hello (10 s).
	HandshakeTimeout time.Duration
	// MaxSessions bounds established sessions (10000).
	MaxSessions int
	// MaxSessionsPerIdentity bounds the sessions one identity (issuer
	// and name) may hold at once; a new one beyond it replaces the
	// oldest, which is told why. 0 means no limit, as in server.toml;
	// the gateway's default is DefaultMaxSessionsPerIdentity.
	MaxSessionsPerIdentity int
	// ReceiveBudget bounds the bytes one session's peer may have in
	// flight to the gateway or waiting unread in its buffers, over all
	// its streams (64 MiB), beyond the initial window each stream gets;
	// ReceiveBudgetTotal bounds the sum over sessions (1 GiB). Negative
	// disables either. See budget.go.
	ReceiveBudget      int64
	ReceiveBudgetTotal int64
	// MaxHandshakes bounds handshakes in progress at once (256); see
	// handshakeGate for what happens when they are all taken.
	MaxHandshakes int
	// HandshakeRate and HandshakeBurst shape a token bucket per source
	// (IPv4 address, IPv6 /64) charged for every handshake that fails; a
	// source that has spent it may run only two handshakes at once. A
	// rate of 0 disables the limit, as in server.toml; the gateway's
	// default is DefaultHandshakeRate, DefaultHandshakeBurst (the burst
	// defaults to that when 0 with a rate set).
	HandshakeRate  float64
	HandshakeBurst int
	// MaxListeners bounds remote (-R) listeners per session (16).
	MaxListeners int
	// DialTimeout bounds resolving and connecting to a target (10 s).
	DialTimeout time.Duration
	// DrainTimeout bounds how long Stop lets open streams finish (30 s).
	DrainTimeout time.Duration
	// Resolver resolves target names (net.DefaultResolver).
	Resolver Resolver
	// LocalAddrs lists the gateway's own addresses (default: every
	// interface's, from the system). A forward to one of them is refused
	// unless a rule names that address exactly.
	LocalAddrs func() ([]netip.Addr, error)
	// Software is announced in the hello ("twoway").
	Software string
	// VPN, if set, turns on VPN mode: clients that ask get addresses
	// and a packets stream through the router.
	VPN *ServerVPN
	// TicketKeys encrypt the TLS session tickets clients resume with
	// (see tickets.go); nil: NewLocalTicketKeys. NoResumption issues no
	// tickets at all: every connection is a full handshake.
	TicketKeys   TicketKeys
	NoResumption bool
	// Enroll, if set, serves enrollments (package enroll): a client
	// that offers EnrollALPN is let in without a certificate, for one
	// exchange with Enroll and nothing else. Nil: every client needs a
	// certificate.
	Enroll Enroller
	// Renew, if set, renews the client certificates of live sessions
	// (KindRenew streams) and, over the same mutual TLS, of EST clients
	// (ALPN http/1.1, RFC 7030 simplereenroll); see renew.go. OnRenew,
	// if set, is told each outcome (metrics); it must not block.
	Renew   Renewer
	OnRenew func(RenewOutcome)

	// OnSession, if set, is called for each established session. The
	// hooks run on the server's own goroutines and must not block.
	OnSession func(SessionInfo)
	// OnRefuse, if set, is called for each refused connection (after it
	// has been logged).
	OnRefuse func(Refusal)
	// OnSessionEnd, if set, is called when an established session has
	// ended and its goroutines are gone, with why it ended.
	OnSessionEnd func(SessionInfo, error)
}

// EnrollALPN is the application protocol of enrollment connections; it is
// enroll.ALPN, repeated here because package enroll, which uses the
// offline CA tooling, is not part of the tunnel.
const EnrollALPN = "twoway-enroll/1"

// EnrollTimeout bounds an enrollment connection after its handshake.
const EnrollTimeout = 30 * time.Second

// Enroller serves one enrollment on a TLS connection whose client
// authenticated the gateway but presented no certificate (*enroll.Handler
// implements it). It must not keep conn after it returns; the server
// closes it then. It is called concurrently, once per connection.
type Enroller interface {
	// Serve reports whether the peer enrolled. A refusal counts against
	// its source's budget of failed handshakes (MaxHandshakes and
	// HandshakeRate), so guessing tokens is as slow as guessing keys.
	Serve(conn net.Conn, remote string) bool
}

func (c ServerConfig) withDefaults() ServerConfig {
	c.Tuning = c.Tuning.withDefaults()
	if c.TicketKeys == nil && !c.NoResumption {
		c.TicketKeys = NewLocalTicketKeys()
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.DialTimeout, 10*time.Second)
	def(&c.DrainTimeout, 30*time.Second)
	defInt(&c.MaxSessions, 10000)
	if c.ReceiveBudget == 0 {
		c.ReceiveBudget = 64 << 20
	}
	if c.ReceiveBudgetTotal == 0 {
		c.ReceiveBudgetTotal = 1 << 30
	}
	defInt(&c.MaxHandshakes, 256)
	if c.HandshakeRate > 0 {
		defInt(&c.HandshakeBurst, DefaultHandshakeBurst)
	}
	defInt(&c.MaxListeners, 16)
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Software == "" {
		c.Software = "twoway"
	}
	return c
}

// The limits a gateway runs with unless told otherwise (server.toml's
// defaults). In ServerConfig, unlike its other fields, 0 turns these off,
// as it does in server.toml, so each caller states them.
const (
	DefaultHandshakeRate          = 5
	DefaultHandshakeBurst         = 20
	DefaultMaxSessionsPerIdentity = 4
)

// Validate checks the configuration without touching the network.
func (c ServerConfig) Validate() error {
	if c.Listen == "" && c.Listener == nil {
		return errors.New("server: no listen address")
	}
	if c.Credentials == nil {
		return errors.New("server: no credentials")
	}
	if c.Credentials.Certificate() == nil {
		return errors.New("server: no gateway certificate loaded")
	}
	if c.Credentials.Verifier() == nil {
		return errors.New("server: no client CA bundle loaded")
	}
	if c.Policy == nil {
		return errors.New("server: no policy")
	}
	if err := c.Tuning.Validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if c.MaxSessions < 0 || c.MaxHandshakes < 0 || c.MaxListeners < 0 || c.HandshakeBurst < 0 ||
		c.HandshakeRate < 0 || c.MaxSessionsPerIdentity < 0 {
		return errors.New("server: limits must not be negative")
	}
	if c.VPN != nil {
		return c.VPN.validate()
	}
	return nil
}

// Server is a twoway gateway: it accepts mTLS clients, admits them by
// policy and serves their streams.
type Server struct {
	cfg       ServerConfig
	log       *slog.Logger
	policy    atomic.Pointer[policyBox]
	gate      *handshakeGate
	refusals  ratelog.Limiter // rate-limits refusal log lines
	lingering chan struct{}   // lingerClose slots
	bufs      *sync.Pool
	router    *router.Router // VPN mode only
	udp       *udpGateway    // the UDP data path; nil without it
	pool      *receivePool   // the gateway-wide receive budget; nil for none
	local     localAddrs     // the gateway's own addresses, which forwards may not reach
	release   memoryRelease  // gives memory back after many sessions end
	totals    serverTotals   // counters of ended sessions

	ln      net.Listener
	ctx     context.Context // cancelled by Stop: ends handshakes and dials
	cancel  context.CancelFunc
	unwatch atomic.Pointer[func() bool] // stops the context.AfterFunc watching Start's ctx

	mu         sync.Mutex
	sessions   map[string]*serverSession // guarded by mu
	byIdentity map[string]int            // sessions per Identity.Key; guarded by mu
	byName     map[string]nameHolder     // sessions per name, and their issuer; guarded by mu
	stopping   bool                      // guarded by mu

	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
	errMu    sync.Mutex
	err      error // first fatal error; guarded by errMu
}

type policyBox struct{ p Policy }

// NewServer checks cfg and prepares a server; nothing listens until Start.
func NewServer(cfg ServerConfig, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		log:        logger,
		gate:       newHandshakeGate(cfg.MaxHandshakes, max(4, cfg.MaxHandshakes/2), newSourceLimiter(cfg.HandshakeRate, cfg.HandshakeBurst, 65536)),
		lingering:  make(chan struct{}, maxLingering),
		bufs:       newBufPool(cfg.Tuning.CopyBuffer),
		sessions:   make(map[string]*serverSession),
		byIdentity: make(map[string]int),
		byName:     make(map[string]nameHolder),
		stopped:    make(chan struct{}),
	}
	s.policy.Store(&policyBox{cfg.Policy})
	s.local.list = cfg.LocalAddrs
	if s.local.list == nil {
		s.local.list = interfaceAddrs
	}
	if cfg.ReceiveBudgetTotal > 0 {
		s.pool = &receivePool{limit: cfg.ReceiveBudgetTotal}
	}
	if cfg.VPN != nil {
		vpn := *cfg.VPN // the caller's copy stays as it was
		s.cfg.VPN = &vpn
		if err := s.newRouter(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SetPolicy replaces the policy for new sessions, streams and binds. Call
// Revalidate afterwards to apply it to live sessions.
// In VPN mode the router checks packets against p from now on.
func (s *Server) SetPolicy(p Policy) {
	s.policy.Store(&policyBox{p})
	if s.router != nil {
		s.router.SetPolicy(p)
	}
}

func (s *Server) pol() Policy { return s.policy.Load().p }

// Start listens and serves in the background. Cancelling ctx stops the
// server like Stop.
func (s *Server) Start(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.log.Info("gateway listening", "addr", ln.Addr().String())
	if s.cfg.VPN != nil && s.cfg.VPN.UDP != nil {
		if err := s.startUDP(); err != nil {
			ln.Close()
			return err
		}
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.acceptLoop() }()
	if s.router != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.readLAN() }()
	}
	// Stop ends this watch first thing, so no Stop starts from it after
	// Stop; one already started is itself a call of Stop, which waits
	// for the first. Atomic: with ctx already done, that Stop may run
	// before Start has stored the stop function.
	unwatch := context.AfterFunc(ctx, s.Stop)
	s.unwatch.Store(&unwatch)
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Wait blocks until the server has stopped and returns the first fatal
// error, if any.
func (s *Server) Wait() error {
	<-s.stopped
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *Server) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
	go s.Stop()
}

// Stop closes the listener, asks every client to finish (bye "shutdown";
// no new streams), lets open streams run for up to DrainTimeout, then
// closes everything and waits for every goroutine. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if unwatch := s.unwatch.Load(); unwatch != nil {
			(*unwatch)()
		}
		s.mu.Lock()
		s.stopping = true
		sessions := s.sessionList()
		s.mu.Unlock()
		if s.ln != nil {
			s.ln.Close()
		}
		if s.cancel != nil {
			s.cancel() // abandons handshakes in progress
		}

		// In parallel (closeSessions): the bye waits for the session's
		// earlier writes, so a client that stopped reading would hold up
		// every other client's bye until its own session times out.
		drained := make([]<-chan struct{}, len(sessions))
		closeSessions(sessions, func(i int, ss *serverSession) { drained[i] = ss.startDrain() })
		timer := time.NewTimer(s.cfg.DrainTimeout)
	wait:
		for _, ch := range drained {
			select {
			case <-ch:
			case <-timer.C:
				s.log.Warn("drain timeout; closing sessions with streams still open", "timeout", s.cfg.DrainTimeout)
				break wait
			}
		}
		timer.Stop()
		for _, ss := range sessions {
			ss.close(ErrShutdown)
		}
		if s.router != nil {
			// After the sessions: their packets stop before the device
			// goes, and closing it is what ends the LAN reader.
			s.router.Close()
			_ = s.cfg.VPN.Device.Close()
		}
		if s.udp != nil {
			_ = s.udp.bind.Close() // ends its readers
		}
		s.wg.Wait()
		s.release.stop()
		s.log.Info("gateway stopped")
		close(s.stopped)
	})
}

// Sessions describes the established sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if !ss.mux.IsClosed() { // closed ones are on their way out
			info := ss.info
			info.Stats = ss.stats()
			out = append(out, info)
		}
	}
	return out
}

func (s *Server) sessionList() []*serverSession {
	out := make([]*serverSession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

// gateWait is how long the accept loop waits for a handshake slot when
// every one is busy with a real handshake (see handshakeGate.admitWait).
const gateWait = time.Second

func (s *Server) acceptLoop() {
	var backoff time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.mu.Lock()
				stopping := s.stopping
				s.mu.Unlock()
				if !stopping {
					s.fail(fmt.Errorf("listener closed: %w", err))
				}
				return
			}
			// EMFILE and friends: back off instead of spinning, and
			// keep serving the sessions we have.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; backing off", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		t, err := s.gate.admitWait(conn, gateWait, s.ctx.Done())
		if err != nil {
			conn.Close()
			s.refuse(Refusal{Remote: conn.RemoteAddr(), Stage: "capacity", Err: err}, nil)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(conn, t)
		}()
	}
}

// serveConn takes one accepted connection through the handshake and the
// hello, then serves the session until it ends.
func (s *Server) serveConn(raw net.Conn, ticket *gateTicket) {
	slotHeld := true
	releaseSlot := func(ok bool) bool {
		evicted := false
		if slotHeld {
			evicted = s.gate.release(ticket, ok, time.Now())
			slotHeld = false
		}
		return evicted
	}
	defer releaseSlot(false)

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	remote := raw.RemoteAddr()
	hs := &serverHandshake{hello: func() bool { return s.gate.helloArrived(ticket) }}
	if err := setNotSentLowat(raw, s.cfg.Tuning.NotSentLowat); err != nil {
		s.log.Debug("TCP_NOTSENT_LOWAT not set", "err", err)
	}
	ck := &corkConn{Conn: raw}
	gr := &gateReader{Conn: ck, t: ticket}
	tc := tls.Server(gr, serverTLSConfig(s.cfg.Credentials, s.ticketKeys(), s.cfg.Enroll != nil, s.cfg.Renew != nil, hs))
	start := time.Now()
	helloTimer := time.AfterFunc(clientHelloTimeout, func() { s.gate.expire(ticket) })
	err := tc.HandshakeContext(ctx)
	helloTimer.Stop()
	if err != nil {
		s.lingerClose(raw)
		r := classifyHandshake(remote, hs, err)
		switch {
		case releaseSlot(false):
			r.Stage, r.Err = "capacity", errEvicted
		case !hs.helloSeen && time.Since(start) >= clientHelloTimeout:
			r.Err = fmt.Errorf("no ClientHello within %s: %w", clientHelloTimeout, err)
		}
		s.refuse(r, nil)
		return
	}
	if hs.enroll {
		releaseSlot(s.serveEnroll(tc, remote))
		return
	}
	if hs.est {
		// The slot is held until the request is answered, as for an
		// enrollment, so that EST connections (which are no sessions)
		// are bounded by MaxHandshakes; the client is verified, so a
		// refused renewal is not charged to its source.
		s.serveEST(tc, hs, remote)
		releaseSlot(true)
		return
	}
	id := hs.identity
	sid := newSessionID()
	logger := s.log.With("peer", id, "session", sid, "remote", addrString(remote))

	t := s.cfg.Tuning
	mc := newMuxConn(tc, raw, t.DeadPeerTimeout, t.WriteBuffer)
	mc.cork = ck
	mc.direct = t.noCoalesce
	mc.paceLowat(t.NotSentLowat)
	// One more than the session's accept loop allows, so that it, which
	// says bye, acts first (see session.acceptLoop).
	mc.guard = newStreamGuard(t.MaxStreams + 2 + acceptBacklog)
	if s.cfg.ReceiveBudget > 0 && !mc.direct { // direct: benchmarks of raw yamux writes only
		mc.guard.enableBudget(s.cfg.ReceiveBudget, s.pool, int64(t.StreamWindow), mc.injectUpdate)
	}
	mux, err := yamux.Server(mc, t.yamuxConfig(logger))
	if err != nil { // only a config error; Validate prevents it
		mc.guard.shutdown()
		mc.Close()
		s.refuse(Refusal{Remote: remote, Stage: "hello", Identity: id, Err: err}, logger)
		return
	}
	ss := &serverSession{session: newSession(sid, mc, mux, t, s.bufs, logger), srv: s, listeners: make(map[uint32]*remoteListener)}
	ss.peer, ss.chain, ss.verifier = id, hs.presented, hs.verifier
	if err := ss.hello(ctx, tc.ConnectionState()); err != nil {
		ss.close(err)
		ss.wait()
		ss.releaseVPN() // after ss.wait: the router peer is gone
		mc.guard.shutdown()
		return
	}
	releaseSlot(true)
	gr.off.Store(true)

	logger.Info("session established", "version", ss.info.Version, "tls", tls.VersionName(ss.info.TLS.Version), "cipher", tls.CipherSuiteName(ss.info.TLS.CipherSuite), "resumed", ss.info.TLS.DidResume)
	if s.cfg.OnSession != nil {
		s.cfg.OnSession(ss.info)
	}
	// This goroutine returns now: it ran the handshake, whose stack it
	// would keep for as long as the session lasts. The session's acceptor
	// runs the end (ss.end), and holds the server's wait group until then.
	//
	// A session cannot outlive the certificates it was admitted with.
	ss.expiry = time.AfterFunc(time.Until(id.ChainNotAfter), func() {
		ss.log.Info("peer certificate chain expired; closing session")
		ss.closeWithBye(ctlExpired, "certificate chain expired", fmt.Errorf("%w: certificate chain expired", ErrDenied))
	})
	s.wg.Add(1)
	ss.start(ss.handleControl, ss.handleStream, func() { defer s.wg.Done(); ss.end() })
	s.totals.sessions.Add(1)
	s.sessionStarted()
	ss.mu.Lock()
	if !ss.ended {
		ss.wg.Add(1)
		go func() { defer ss.wg.Done(); ss.ping() }() // a first RTT for status
	}
	ss.mu.Unlock()
}

// serveEnroll hands an enrollment connection to the Enroller for at most
// EnrollTimeout, then closes it, and reports whether the peer enrolled. The connection holds its handshake slot
// until then, so enrollments count against MaxHandshakes like sessions
// being set up; Stop closes it rather than wait out the timeout.
func (s *Server) serveEnroll(tc *tls.Conn, remote net.Addr) bool {
	_ = tc.SetDeadline(time.Now().Add(EnrollTimeout))
	stop := context.AfterFunc(s.ctx, func() { _ = tc.NetConn().Close() })
	defer stop()
	ok := s.cfg.Enroll.Serve(tc, addrString(remote))
	_ = tc.Close()
	return ok
}

// end runs once an established session has ended and its goroutines but
// the acceptor have returned: it closes what the session held, forgets
// it and logs why it ended.
func (ss *serverSession) end() {
	s := ss.srv
	ss.expiry.Stop()
	ss.close(ErrClosedByPeer) // records a reason if nothing else did
	ss.closeListeners()
	ss.wait()
	ss.releaseVPN() // after ss.wait: the router peer is gone
	ss.conn.guard.shutdown()
	s.mu.Lock()
	s.removeSession(ss)
	s.totals.add(ss.stats())
	live := len(s.sessions)
	s.mu.Unlock()
	s.sessionEnded(live)
	reason := ss.endReason()
	ss.log.Info("session closed", "reason", reason, "duration", time.Since(ss.info.Established).Round(time.Millisecond))
	if s.cfg.OnSessionEnd != nil {
		s.cfg.OnSessionEnd(ss.info, reason)
	}
}

// serverSession is the gateway's side of one session.
type serverSession struct {
	*session
	srv      *Server
	verifier *pki.Verifier // the snapshot that admitted the session
	// listeners are this session's remote (-R) listeners by id; guarded
	// by session.mu.
	listeners map[uint32]*remoteListener
	// lease is the session's VPN addresses (nil without VPN); set in
	// the hello, released when the session is gone.
	lease *ipam.Lease
	// packets is the session's packets stream; guarded by session.mu.
	packets *yamux.Stream
	// forwards are the live forwarded streams by stream id; guarded by
	// session.mu.
	forwards map[uint32]forwardRef
	// expiry ends the session when its chain expires; set before start.
	expiry *time.Timer
	// udp is the session's UDP path, if it has one; set in the hello.
	udp *udpLink
	// fromPeerMu serialises the router's FromPeer for this session's
	// peer between the packets stream and the UDP path.
	fromPeerMu sync.Mutex
}

// hello runs the control-stream handshake: the client opens stream 1 and
// says hello; the gateway checks the version and admission and answers.
// Any failure is logged as a refusal and the error returned.
func (ss *serverSession) hello(ctx context.Context, cs tls.ConnectionState) error {
	s := ss.srv
	refuse := func(stage string, err error) error {
		if rerr := ss.conn.readErr(); isPeerAbuse(rerr) && !errors.Is(err, rerr) {
			err = fmt.Errorf("%w: %w", rerr, err) // the real reason, not its symptom
		}
		s.refuse(Refusal{Remote: ss.conn.RemoteAddr(), Stage: stage, Identity: ss.peer, Err: err}, ss.log)
		return err
	}
	st, err := ss.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		return refuse("hello", fmt.Errorf("no control stream: %w", err))
	}
	if st.StreamID() != 1 {
		return refuse("hello", fmt.Errorf("first stream is %d, not the control stream", st.StreamID()))
	}
	ss.ctrl = st
	deadline, _ := ctx.Deadline()
	_ = st.SetDeadline(deadline)
	m, err := readControl(st)
	if err != nil {
		return refuse("hello", fmt.Errorf("reading hello: %w", err))
	}
	if m.Type != msgHello {
		return refuse("hello", fmt.Errorf("expected hello, got %q", m.Type))
	}
	reply := func(code, msg string) {
		_ = writeControl(st, &controlMsg{Type: msgError, Code: code, Message: msg})
		// Closing the connection at once can lose this answer: data the
		// client sent that we never read makes our close an RST, and an
		// RST discards what the client has not read yet. So half-close and
		// wait, bounded, for the client to hang up first.
		_ = st.Close()
		_ = st.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(st, 64<<10))
	}
	version := min(m.Version, ProtocolVersion)
	if version < max(m.MinVersion, minProtocolVersion) || m.Version < 1 {
		msg := fmt.Sprintf("client speaks versions %d..%d, gateway %d..%d", m.MinVersion, m.Version, minProtocolVersion, ProtocolVersion)
		reply(ctlVersion, msg)
		return refuse("hello", fmt.Errorf("%w: protocol version: %s", ErrUnsupported, msg))
	}
	pol := s.pol()
	ss.peer = pol.Honour(ss.peer)
	if len(ss.peer.DroppedGroups) > 0 {
		// Not a refusal: the session goes on with the groups its CA may grant.
		ss.log.Info("certificate groups not honoured: its CA may not grant them", "dropped", ss.peer.DroppedGroups, "kept", ss.peer.Groups)
	}
	if d := pol.Admit(ss.peer); !d.Allow {
		msg := fmt.Sprintf("%s is not admitted (rule %q)", ss.peer.Name(), d.Rule)
		reply(ctlDenied, msg)
		return refuse("admit", fmt.Errorf("%w: %s", ErrDenied, msg))
	}
	ss.peerCaps = capSet(m.Capabilities)
	t := ss.tuning
	params := SessionParams{
		MaxStreams:   t.MaxStreams,
		MaxListeners: s.cfg.MaxListeners,
		StreamWindow: t.StreamWindow,
		DialTimeout:  s.cfg.DialTimeout.Milliseconds(),
		KeepAlive:    t.KeepAliveInterval.Milliseconds(),
		DeadPeer:     t.DeadPeerTimeout.Milliseconds(),
	}
	grants := pol.Grants(ss.peer)
	vpn, vpnErr := ss.acquireVPN()
	var udp *udpHello
	if vpn != nil {
		udp = ss.offerUDP(cs.ExportKeyingMaterial, m.UDP)
	}
	// A session that may move its packets to UDP does without GSO on
	// the packets stream: the router's queue for it then holds finished
	// packets, which fit datagrams (the UDP socket has GSO of its own).
	ss.gso = vpn != nil && udp == nil && ss.peerCaps[capGSO] && s.gsoOK()
	ss.info = SessionInfo{
		ID: ss.id, Version: version, Local: ss.conn.LocalAddr(), Remote: ss.conn.RemoteAddr(),
		TLS: cs, Peer: ss.peer, PeerChain: ss.chain, VerifiedChain: ss.peer.Chain,
		Grants: grants, Params: params, VPN: vpn, GSO: ss.gso,
		PeerSoftware: m.Software, Established: time.Now(),
	}
	if no := s.admit(ss); no != nil {
		reply(no.code, no.msg)
		return refuse(no.stage, no.err)
	}

	caps := []string{capForward, capReverse, capReset}
	if s.cfg.Renew != nil {
		caps = append(caps, capRenew)
	}
	if s.router != nil {
		caps = append(caps, capVPN)
		if ss.gso {
			caps = append(caps, capGSO)
		}
		if udp != nil {
			caps = append(caps, capUDP, capClock)
		}
	}
	ss.conn.guard.helloDone() // the client opens data streams once it reads this
	ss.ctrlMu.Lock()
	err = writeControl(st, &controlMsg{
		Type: msgHello, Version: version, MinVersion: minProtocolVersion, Software: s.cfg.Software,
		Capabilities: caps, Session: ss.id,
		Identity: &HelloIdentity{Name: ss.peer.Name(), Serial: ss.peer.Serial, Groups: ss.peer.Groups, Issuer: ss.peer.Issuer},
		Grants:   grants, Params: &params, VPN: vpn, VPNError: vpnErr, UDP: udp,
	})
	ss.ctrlMu.Unlock()
	_ = st.SetDeadline(time.Time{})
	if err != nil {
		s.mu.Lock()
		s.removeSession(ss)
		s.mu.Unlock()
		return refuse("hello", fmt.Errorf("sending hello: %w", err))
	}
	return nil
}

func capSet(caps []string) map[string]bool {
	m := make(map[string]bool, len(caps))
	for _, c := range caps {
		m[c] = true
	}
	return m
}

// startDrain stops new streams and remote connections, tells the client
// (bye "shutdown", yamux GoAway) and returns a channel closed when the
// session's last stream has ended.
func (ss *serverSession) startDrain() <-chan struct{} {
	ch := ss.drain()
	ss.closeListeners()
	ss.closePackets()
	_ = ss.sendControlTimeout(&controlMsg{Type: msgBye, Code: ctlShutdown, Message: "gateway is shutting down"}, time.Second)
	_ = ss.mux.GoAway()
	return ch
}

// handleStream serves one data stream opened by the client.
func (ss *serverSession) handleStream(st *yamux.Stream) {
	defer ss.conn.streamClosed(st.StreamID())
	ss.ctr.streamsOpened.Add(1)
	_ = st.SetReadDeadline(time.Now().Add(ss.srv.cfg.HandshakeTimeout))
	h, err := readStreamHeader(st)
	if err != nil {
		ss.log.Info("bad stream header", "stream", st.StreamID(), "err", err)
		ss.refuseStream(st, CodeBadRequest, "malformed stream header")
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	switch h.Kind {
	case KindConnect:
		ss.handleConnect(st, h)
	case KindPackets:
		ss.handlePackets(st)
	case KindRenew:
		ss.handleRenew(st)
	default:
		ss.refuseStream(st, CodeUnsupported, "stream kind "+h.Kind.String()+" is not served")
	}
}

// lingerClose closes a connection refused in the handshake so that its
// alert reaches the client. A TLS 1.3 client sends its first data right
// after its Finished, before it reads our verdict; closing with that data
// unread (or arriving) makes the kernel answer with a reset, and the
// client's write fails with a broken pipe before it has read why. So our
// side is shut down first and what still arrives is read and dropped for a
// moment, in the background, at most maxLingering connections at a time.
func (s *Server) lingerClose(c net.Conn) {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return
	}
	select {
	case s.lingering <- struct{}{}:
	default:
		c.Close() // too many already: no courtesy under load
		return
	}
	_ = tcp.CloseWrite()
	// Called from serveConn, whose own wg count is still held.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.lingering }()
		defer tcp.Close()
		_ = tcp.SetReadDeadline(time.Now().Add(lingerTime))
		stop := context.AfterFunc(s.ctx, func() { _ = tcp.SetReadDeadline(time.Now()) })
		defer stop()
		_, _ = io.Copy(io.Discard, io.LimitReader(tcp, 1<<20))
	}()
}

// lingerTime and maxLingering bound lingerClose.
const (
	lingerTime   = time.Second
	maxLingering = 256
)

// ticketKeys returns the session ticket keys to use now; none when
// resumption is off.
func (s *Server) ticketKeys() [][32]byte {
	if s.cfg.NoResumption || s.cfg.TicketKeys == nil {
		return nil
	}
	return s.cfg.TicketKeys.TicketKeys()
}
