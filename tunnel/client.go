package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/proxy"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
)

// ClientConfig configures a client. Zero values mean the documented
// defaults.
type ClientConfig struct {
	// Endpoints are gateway addresses (host:port). A (re)connect tries
	// them in turn, starting after the gateway whose session was lost
	// last, so that a client leaves a dead gateway at once instead of
	// waiting for its dial to time out again.
	Endpoints []string
	// ShuffleEndpoints makes each client try Endpoints in an order of
	// its own, drawn once when it is created, so that the clients of a
	// fleet spread over its gateways; without it they all start at the
	// first.
	ShuffleEndpoints bool
	// ServerName, if set, is the name the gateway certificate must carry
	// instead of each endpoint's host.
	ServerName string
	// Pins, if any, are SPKI pins (pki.SPKIPin); the gateway chain must
	// contain a matching key.
	Pins []string
	// Credentials supply the client certificate and the server-CA
	// verifier (a *pki.Store).
	Credentials Credentials
	// Forwards to set up: -L and -D listen here, -R on the gateway.
	Forwards []Forward
	// Tuning of the multiplexer; see DefaultTuning.
	Tuning Tuning

	// Proxy, if set, picks an HTTP proxy to reach each endpoint through
	// (proxy.Fixed, proxy.FromEnvironment); nil: always direct.
	// ProxyUser and ProxyPassword are its Basic credentials, if the
	// proxy URL carries none.
	Proxy                    proxy.Func
	ProxyUser, ProxyPassword string
	// DialTimeout bounds the TCP connect to a gateway (or its proxy) and,
	// for -R, to a local target (10 s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake plus the hello (10 s).
	HandshakeTimeout time.Duration
	// SessionWait is how long a local connection arriving while the
	// tunnel is down waits for it before being refused (5 s).
	SessionWait time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// after each failure, with jitter (500 ms, 30 s).
	BackoffMin, BackoffMax time.Duration
	// DrainTimeout bounds how long Stop lets open streams finish (10 s).
	DrainTimeout time.Duration
	// Software is announced in the hello ("twoway").
	Software string
	// SOCKSAuth, if set, makes -D listeners require SOCKS5
	// username/password authentication checked by it (see
	// socks5.StaticCredentials).
	SOCKSAuth func(user, password string) bool
	// VPN, if set, asks the gateway for VPN mode and carries the TUN
	// device's packets; forwards keep working alongside.
	VPN *ClientVPN

	// OnSession, if set, is called after each successful hello.
	OnSession func(SessionInfo)
	// OnDisconnect, if set, is called when a session ends, with why.
	OnDisconnect func(err error)
	// OnConnectError, if set, is called when no gateway could be reached
	// (or none accepted us), with why, before the client backs off.
	OnConnectError func(err error)
	// OnRemoteListen, if set, is called with the gateway's answer to each
	// -R forward: the address it listens on, or why not.
	OnRemoteListen func(f Forward, bound string, err error)
}

func (c ClientConfig) withDefaults() ClientConfig {
	c.Tuning = c.Tuning.withDefaults()
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.DialTimeout, 10*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.SessionWait, 5*time.Second)
	def(&c.BackoffMin, 500*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	if c.Software == "" {
		c.Software = "twoway"
	}
	return c
}

// Validate checks the configuration without touching the network.
func (c ClientConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("client: no gateway endpoints")
	}
	for _, e := range c.Endpoints {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return fmt.Errorf("client: endpoint %q: %w", e, err)
		}
	}
	if c.Credentials == nil || c.Credentials.Certificate() == nil {
		return errors.New("client: no client certificate loaded")
	}
	if c.Credentials.Verifier() == nil {
		return errors.New("client: no gateway CA bundle loaded")
	}
	for _, f := range c.Forwards {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("client: %w", err)
		}
	}
	if err := c.Tuning.Validate(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin && c.BackoffMax != 0 {
		return errors.New("client: backoff bounds are inconsistent")
	}
	if c.VPN != nil && c.VPN.Device == nil {
		return errors.New("client: vpn: no TUN device")
	}
	return nil
}

// Client keeps a session to a gateway up and serves the forwards over it.
// Local listeners stay open across reconnects.
type Client struct {
	cfg     ClientConfig
	log     *slog.Logger
	bufs    *sync.Pool
	ctx     context.Context // cancelled by Stop
	cancel  context.CancelFunc
	unwatch atomic.Pointer[func() bool] // stops the context.AfterFunc watching Start's ctx

	locals []*localListener

	tickets tls.ClientSessionCache // session tickets, per gateway name

	// order is Endpoints as this client tries them (ShuffleEndpoints);
	// next is where the next connectAny starts. Owned by run.
	order []string
	next  int

	link    atomic.Pointer[clientLink] // the current session's VPN, if up
	outq    *router.Queue              // packets read from the VPN device, for the link (VPN mode)
	udpCtr  udpCounters                // every session's UDP path
	runDone chan struct{}              // closed when run has returned
	keptMu  sync.Mutex
	kept    *appliedConfig // between sessions with VPN.Persist; guarded by keptMu

	mu       sync.Mutex
	cur      *clientSession            // the session new streams use; guarded by mu
	ready    chan struct{}             // closed when cur is set; guarded by mu
	live     map[*clientSession]bool   // every session not yet closed; guarded by mu
	remote   map[uint32]*remoteForward // -R forwards by listener id; guarded by mu
	stopping bool                      // guarded by mu

	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
}

// NewClient checks cfg and prepares a client; nothing happens until Start.
func NewClient(cfg ClientConfig, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg: cfg, log: logger, bufs: newBufPool(cfg.Tuning.CopyBuffer),
		ready: make(chan struct{}), live: make(map[*clientSession]bool),
		remote: make(map[uint32]*remoteForward), stopped: make(chan struct{}),
		runDone: make(chan struct{}),
	}
	c.tickets = tls.NewLRUClientSessionCache(clientTicketCache)
	c.order = slices.Clone(cfg.Endpoints)
	if cfg.ShuffleEndpoints {
		rand.Shuffle(len(c.order), func(i, j int) { c.order[i], c.order[j] = c.order[j], c.order[i] })
	}
	for i, f := range cfg.Forwards {
		if f.Kind == ForwardRemote {
			c.remote[uint32(i+1)] = &remoteForward{fwd: f}
		}
	}
	if cfg.VPN != nil {
		// Made here, not in Start, so that QueueStats may read it at any time.
		// Four times the gateway's packet limit: on the UDP path every
		// TUN read is split into MTU-sized packets, and 1024 of them are
		// under 5 ms at 2.5 Gbit/s, so a burst from the kernel overflowed
		// the queue (200k drops in a 5 s four-stream lab run) long before
		// the sojourn target could act. The byte limit stays the bound.
		c.outq = router.NewQueue(4*router.DefaultQueueLen, router.DefaultQueueBytes)
	}
	return c, nil
}

// Start opens the local listeners (failing if any cannot be opened) and
// starts connecting in the background. Cancelling ctx stops the client.
func (c *Client) Start(ctx context.Context) error {
	for _, f := range c.cfg.Forwards {
		if f.Kind == ForwardRemote {
			continue
		}
		ln, err := net.Listen("tcp", f.Listen)
		if err != nil {
			for _, l := range c.locals {
				l.ln.Close()
			}
			return fmt.Errorf("client: %s: %w", f, err)
		}
		c.locals = append(c.locals, &localListener{fwd: f, ln: ln})
		c.log.Info("forward listening", "forward", f.String(), "addr", ln.Addr().String())
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for _, l := range c.locals {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.acceptLocal(l)
		}()
	}
	if c.cfg.VPN != nil {
		c.wg.Add(2)
		go func() { defer c.wg.Done(); c.readDevice() }()
		go func() { defer c.wg.Done(); c.writeQueue() }()
	}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); defer close(c.runDone); c.run() }()
	// Stop ends this watch first thing, so no Stop starts from it after
	// Stop; one already started is itself a call of Stop, which waits
	// for the first. Atomic: with ctx already done, that Stop may run
	// before Start has stored the stop function.
	unwatch := context.AfterFunc(ctx, c.Stop)
	c.unwatch.Store(&unwatch)
	return nil
}

// Stop closes the local listeners, lets open streams finish for up to
// DrainTimeout, closes the session and waits for every goroutine. It is
// idempotent.
func (c *Client) Stop() {
	c.stopOnce.Do(func() {
		if unwatch := c.unwatch.Load(); unwatch != nil {
			(*unwatch)()
		}
		c.mu.Lock()
		c.stopping = true
		c.cur = nil
		var sessions []*clientSession
		for cs := range c.live {
			sessions = append(sessions, cs)
		}
		c.mu.Unlock()
		for _, l := range c.locals {
			l.ln.Close()
		}
		var drained []<-chan struct{}
		for _, cs := range sessions {
			drained = append(drained, cs.drain())
		}
		timer := time.NewTimer(c.cfg.DrainTimeout)
	wait:
		for _, ch := range drained {
			select {
			case <-ch:
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
		if c.cancel != nil {
			c.cancel()
		}
		for _, cs := range sessions {
			cs.close(ErrStopped)
		}
		if c.cfg.VPN != nil {
			// run undoes the VPN configuration on its way out; the
			// device goes after that, which ends its reader.
			if c.cancel != nil {
				<-c.runDone
			}
			_ = c.cfg.VPN.Device.Close()
		}
		c.wg.Wait()
		close(c.stopped)
	})
}

// Wait blocks until the client has stopped. A client has no fatal errors
// of its own: it keeps reconnecting until stopped.
func (c *Client) Wait() error {
	<-c.stopped
	return nil
}

// run keeps a session up: connect, serve until it ends, back off, repeat.
func (c *Client) run() {
	backoff := c.cfg.BackoffMin
	var link *clientLink
	defer func() {
		c.vpnDown(link)
		c.undoConfig(c.takeKept())
	}()
	for {
		cs, err := c.connectAny()
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			d := jitter(backoff)
			c.log.Warn("cannot reach gateway; will retry", "err", err, "retry_in", d.Round(time.Millisecond))
			if c.cfg.OnConnectError != nil {
				c.cfg.OnConnectError(err)
			}
			if !c.sleep(d) {
				return
			}
			backoff = min(2*backoff, c.cfg.BackoffMax)
			continue
		}
		if !c.adopt(cs) {
			cs.close(ErrStopped)
			cs.wait()
			return
		}
		cs.log.Info("connected to gateway", "gateway", cs.endpoint, "version", cs.info.Version, "grants", cs.info.Grants)
		cs.wg.Add(1)
		go func() { defer cs.wg.Done(); cs.ping() }() // a first RTT for status
		if c.cfg.OnSession != nil {
			c.cfg.OnSession(cs.info)
		}
		cs.registerRemote()
		if c.cfg.VPN != nil {
			link = c.vpnUp(cs)
		}

		// Serve until the session ends or the gateway announces it is
		// going away; in the second case the old session keeps carrying
		// its open streams while we connect a new one for new streams.
		select {
		case <-cs.done():
		case <-cs.byeCh:
		case <-c.ctx.Done():
			return
		}
		c.vpnDown(link)
		link = nil
		c.retire(cs)
		// The next attempt starts with the next gateway: this one is
		// going away, or dead, or unreachable from here now.
		c.next = (cs.order + 1) % len(c.order)
		reason := cs.endReason()
		graceful := errors.Is(reason, ErrShutdown)
		cs.log.Warn("gateway session lost; reconnecting", "reason", reason)
		if c.cfg.OnDisconnect != nil {
			c.cfg.OnDisconnect(reason)
		}
		if time.Since(cs.info.Established) > c.cfg.BackoffMax {
			backoff = c.cfg.BackoffMin // it was a good session, not a flapping one
		}
		if !graceful {
			if !c.sleep(jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, c.cfg.BackoffMax)
		}
	}
}

// jitter spreads reconnects of many clients after a gateway restart:
// uniformly in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// adopt makes cs the session for new streams.
func (c *Client) adopt(cs *clientSession) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.cur = cs
	c.live[cs] = true
	close(c.ready)
	c.wg.Add(1)
	go func() {
		// The session's owner: waits for it to end, for whatever reason,
		// and forgets it.
		defer c.wg.Done()
		<-cs.done()
		cs.close(ErrClosedByPeer)
		cs.wait()
		c.mu.Lock()
		delete(c.live, cs)
		c.mu.Unlock()
	}()
	return true
}

// retire stops using cs for new streams.
func (c *Client) retire(cs *clientSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != cs {
		return // already replaced
	}
	c.cur = nil
	c.ready = make(chan struct{})
	for _, rf := range c.remote {
		rf.bound = ""
	}
}

// session returns the current session, waiting up to SessionWait for one.
func (c *Client) session(ctx context.Context) (*clientSession, error) {
	timer := time.NewTimer(c.cfg.SessionWait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		cs, ready, stopping := c.cur, c.ready, c.stopping
		c.mu.Unlock()
		if stopping {
			return nil, ErrStopped
		}
		if cs != nil {
			if !cs.mux.IsClosed() && !cs.byeReceived() {
				return cs, nil
			}
			// Dead or going away, and run has not replaced it yet: stop
			// handing it out.
			c.retire(cs)
			continue
		}
		select {
		case <-ready:
		case <-timer.C:
			return nil, fmt.Errorf("%w: no gateway session within %s", ErrUnreachable, c.cfg.SessionWait)
		case <-ctx.Done():
			return nil, ErrStopped
		}
	}
}

// connectAny tries each endpoint once, in c.order from c.next on.
func (c *Client) connectAny() (*clientSession, error) {
	var errs []error
	for i := range c.order {
		at := (c.next + i) % len(c.order)
		cs, err := c.connect(c.order[at])
		if err == nil {
			cs.order = at
			return cs, nil
		}
		if c.ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// beforeDial runs for each address the gateway's name resolves to, just
// before connecting: a kept VPN configuration that would swallow the dial
// goes first.
func (c *Client) beforeDial(_ context.Context, _, address string, _ syscall.RawConn) error {
	if ap, err := netip.ParseAddrPort(address); err == nil && c.cfg.VPN != nil {
		c.releaseKeptFor(ap.Addr())
	}
	return nil
}

// connect dials one endpoint, verifies the gateway and says hello.
func (c *Client) connect(endpoint string) (*clientSession, error) {
	host, _, _ := net.SplitHostPort(endpoint)
	serverName := c.cfg.ServerName
	if serverName == "" {
		serverName = host
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout+c.cfg.HandshakeTimeout)
	defer cancel()
	d := proxy.Dialer{Proxy: c.cfg.Proxy, User: c.cfg.ProxyUser, Password: c.cfg.ProxyPassword,
		Direct: &net.Dialer{Timeout: c.cfg.DialTimeout, ControlContext: c.beforeDial}}
	raw, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	hs := &clientHandshake{}
	tcfg, err := clientTLSConfig(c.cfg.Credentials, serverName, c.cfg.Pins, c.tickets, hs)
	if err != nil {
		raw.Close()
		return nil, err
	}
	hctx, hcancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer hcancel()
	if err := setNotSentLowat(raw, c.cfg.Tuning.NotSentLowat); err != nil {
		c.log.Debug("TCP_NOTSENT_LOWAT not set", "err", err)
	}
	ck := &corkConn{Conn: raw}
	tc := tls.Client(ck, tcfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		if hs.err != nil {
			return nil, fmt.Errorf("%s: gateway certificate: %w", endpoint, hs.err)
		}
		return nil, fmt.Errorf("%s: TLS handshake: %w", endpoint, err)
	}
	t := c.cfg.Tuning
	mc := newMuxConn(tc, raw, t.DeadPeerTimeout, t.WriteBuffer)
	mc.cork = ck
	mc.direct = t.noCoalesce
	mc.paceLowat(t.NotSentLowat)
	logger := c.log.With("gateway", hs.identity, "remote", endpoint)
	mux, err := yamux.Client(mc, t.yamuxConfig(logger))
	if err != nil {
		mc.Close()
		return nil, err
	}
	cs := &clientSession{session: newSession("", mc, mux, t, c.bufs, logger), client: c, endpoint: endpoint}
	cs.peer, cs.chain, cs.verifier = hs.identity, tc.ConnectionState().PeerCertificates, hs.verifier
	if err := cs.hello(hctx, tc.ConnectionState()); err != nil {
		cs.close(err)
		return nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	cs.start(cs.handleControl, cs.handleStream, nil)
	return cs, nil
}

// clientSession is the client's side of one session.
type clientSession struct {
	*session
	client   *Client
	endpoint string
	order    int           // endpoint's index in Client.order
	verifier *pki.Verifier // the snapshot that accepted the gateway
	vpnErr   string        // why the gateway pushed no VPN config, if it said
	udpRecv  uint32        // the receiver index we offered for the UDP path; 0 = none
	udpHello *udpHello     // the gateway's side of the UDP path, if agreed
	udpKeys  *udpKeys      // the UDP path's keys, if agreed
}

func (cs *clientSession) hello(ctx context.Context, state tls.ConnectionState) error {
	// A gateway that refused our certificate says so with a TLS alert,
	// which surfaces as the connection's read error, whichever step it
	// interrupts.
	fail := func(what string, err error) error {
		if rerr := cs.conn.readErr(); rerr != nil {
			return fmt.Errorf("gateway closed the connection: %w", rerr)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	st, err := cs.mux.OpenStream()
	if err != nil {
		return fail("opening control stream", err)
	}
	cs.ctrl = st
	deadline, _ := ctx.Deadline()
	_ = st.SetDeadline(deadline)
	caps := []string{capForward, capReverse, capReset}
	if v := cs.client.cfg.VPN; v != nil {
		caps = append(caps, capVPN)
		if _, ok := tun.AsGSO(v.Device); ok {
			caps = append(caps, capGSO)
		}
	}
	var udp *udpHello
	if v := cs.client.cfg.VPN; v != nil && !v.TCPOnly {
		caps = append(caps, capUDP, capClock)
		cs.udpRecv = newReceiverIndex()
		udp = &udpHello{Receiver: cs.udpRecv}
	}
	err = writeControl(st, &controlMsg{
		Type: msgHello, Version: ProtocolVersion, MinVersion: minProtocolVersion,
		Software: cs.client.cfg.Software, Capabilities: caps, UDP: udp,
	})
	var m *controlMsg
	if err == nil {
		m, err = readControl(st)
	}
	if err != nil {
		return fail("hello", err)
	}
	switch {
	case m.Type == msgError:
		return &HelloError{Code: m.Code, Message: m.Message}
	case m.Type != msgHello:
		return fmt.Errorf("%w: expected hello, got %q", ErrBadControl, m.Type)
	case m.Version < minProtocolVersion || m.Version > ProtocolVersion:
		return fmt.Errorf("%w: gateway chose protocol version %d", ErrUnsupported, m.Version)
	case m.Session == "":
		return fmt.Errorf("%w: hello without a session id", ErrBadControl)
	}
	_ = st.SetDeadline(time.Time{})
	cs.id = m.Session
	cs.log = cs.log.With("session", m.Session)
	cs.peerCaps = capSet(m.Capabilities)
	cs.info = SessionInfo{
		ID: m.Session, Version: m.Version, Local: cs.conn.LocalAddr(), Remote: cs.conn.RemoteAddr(),
		TLS: state, Peer: cs.peer, PeerChain: cs.chain, VerifiedChain: cs.peer.Chain,
		Self: m.Identity, Grants: m.Grants, VPN: m.VPN, GSO: m.VPN != nil && cs.peerCaps[capGSO],
		PeerSoftware: m.Software, Established: time.Now(),
	}
	cs.vpnErr = m.VPNError
	if u := m.UDP; u != nil && cs.udpRecv != 0 && m.VPN != nil && cs.peerCaps[capUDP] && u.Receiver != 0 && u.Port > 0 && u.Port < 65536 {
		keys, err := newUDPKeys(state.ExportKeyingMaterial, m.Session, true, cs.udpRecv, u.Receiver)
		if err != nil {
			cs.log.Warn("no UDP path for this session", "err", err)
		} else {
			cs.udpHello, cs.udpKeys = u, keys
		}
	}
	if m.Params != nil {
		cs.info.Params = *m.Params
	}
	return nil
}

// replyTimeout bounds the wait for the gateway's answer to a stream
// header: its own dial timeout, as announced, plus slack for the trip.
func (cs *clientSession) replyTimeout() time.Duration {
	d := time.Duration(cs.info.Params.DialTimeout) * time.Millisecond
	if d <= 0 || d > 5*time.Minute {
		d = 30 * time.Second
	}
	return d + cs.tuning.DeadPeerTimeout
}
