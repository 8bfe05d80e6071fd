// Package daemon turns a configuration into a running gateway or client:
// it builds the credential store, the policy and the tunnel, and handles
// reloads (daemon.go, vpn.go, ops.go, status.go, privilege*.go).
//
// It is also the one way to run a daemon (run.go, log.go): Load reads a
// configuration file and builds the daemon with its logger (NewHandler),
// Start starts it and drops root, and Run keeps it in the foreground,
// reloading on SIGHUP and draining on SIGTERM or SIGINT. `twoway server`,
// `twoway client` and `twoway forward` are flag parsing plus RunServer or
// RunClient; the system service (package service) calls Load, Start,
// HandleSignal and Reload under kardianos/service.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/fleet"
	"github.com/twoway/twoway/internal/buildinfo"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/proxy"
	"github.com/twoway/twoway/renew"
	"github.com/twoway/twoway/socks5"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tunnel"
)

// Server is a running gateway.
type Server struct {
	path   string // config file, re-read on Reload; "" when built in code
	log    *slog.Logger
	store  *pki.Store
	tunnel *tunnel.Server
	vpn    *gatewayVPN  // VPN mode only
	fleet  *fleet.Fleet // with [fleet] only
	ops    *ops
	// started is set by Start, before anything can read it.
	started time.Time

	mu  sync.Mutex // guards cfg and fleetPolicy, and serialises Reload
	cfg *config.Server
	// fleetPolicy is the fleet's published policy while there is one; it
	// takes the place of cfg's.
	fleetPolicy *policy.Policy
	// boot is the configuration the daemon started with: what a reload
	// cannot change (listen, [limits], [tls], [vpn]) stays as it was.
	boot *config.Server

	stopOnce sync.Once
}

// NewServer validates cfg (loaded from path, which Reload re-reads) and
// builds the gateway without starting it.
func NewServer(path string, cfg *config.Server, logger *slog.Logger) (*Server, error) {
	store, err := newStore(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.KeyPasswordFile, cfg.TLS.ClientCA, cfg.TLS.CRLs, cfg.TLS.CRLStale == config.CRLStaleReject)
	if err != nil {
		return nil, err
	}
	logWarnings(logger, cfg.Warnings())
	pol, err := cfg.CompiledPolicy()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	tc := tunnel.ServerConfig{
		Listen:                 cfg.Listen,
		Credentials:            store,
		Policy:                 pol,
		HandshakeTimeout:       cfg.Limits.HandshakeTimeout,
		MaxSessions:            cfg.Limits.MaxSessions,
		MaxHandshakes:          cfg.Limits.MaxHandshakes,
		MaxSessionsPerIdentity: cfg.Limits.MaxSessionsPerIdentity,
		ReceiveBudget:          int64(cfg.Limits.ReceiveBudgetMiB) << 20,
		ReceiveBudgetTotal:     int64(cfg.Limits.ReceiveBudgetTotalMiB) << 20,
		HandshakeRate:          cfg.Limits.HandshakeRate,
		HandshakeBurst:         cfg.Limits.HandshakeBurst,
		Software:               software(),
		NoResumption:           !cfg.TLS.SessionTickets,
		Tuning: tunnel.Tuning{
			MaxStreams:        cfg.Limits.MaxStreamsPerSession,
			KeepAliveInterval: cfg.Limits.KeepaliveInterval,
			DeadPeerTimeout:   cfg.Limits.DeadPeerTimeout,
		},
	}
	s := &Server{path: path, log: logger, store: store, cfg: cfg, boot: cfg}
	if s.ops, err = newOps(config.RoleServer, cfg.Control, cfg.Metrics, store, s, nil, logger); err != nil {
		return nil, err
	}
	tc.OnSession = s.ops.observeSession
	tc.OnRefuse = s.ops.observeRefusal
	if cfg.Enroll.Enabled() {
		var r *caRenewer
		if tc.Enroll, r, err = openEnroll(&cfg.Enroll, logger); err != nil {
			return nil, err
		}
		tc.Renew, tc.OnRenew = r, s.ops.observeRenewal
	}
	// The fleet connects to etcd before VPN mode, whose addresses it
	// keeps; a gateway that cannot reach its fleet does not start.
	var leases ipam.Store
	if cfg.Fleet.Enabled() {
		if s.fleet, err = startFleet(s, &tc, logger); err != nil {
			return nil, err
		}
		leases = s.fleet.Addresses()
	}
	// VPN mode touches the system (TUN device, addresses, forwarding,
	// nftables) last, after everything else validated.
	var gv *gatewayVPN
	if cfg.VPN.Enable {
		if tc.VPN, gv, err = openGatewayVPN(&cfg.VPN, leases, logger); err != nil {
			s.fleet.Stop()
			return nil, err
		}
		gv.announceSessions(&tc)
	}
	ts, err := tunnel.NewServer(tc, logger)
	if err != nil {
		s.fleet.Stop()
		if gv != nil {
			gv.close()
			_ = tc.VPN.Device.Close()
		}
		return nil, err
	}
	s.tunnel, s.vpn = ts, gv
	return s, nil
}

// Start starts listening, then the control socket, metrics and expiry
// warnings; it does not block. On error everything is stopped again,
// including the VPN setup NewServer made (forwarding sysctls, the NAT
// table): callers return the error without calling Stop.
func (s *Server) Start(ctx context.Context) error {
	s.started = time.Now()
	if err := s.tunnel.Start(ctx); err != nil {
		s.Stop()
		return err
	}
	if err := s.ops.start(ctx); err != nil {
		s.Stop()
		return err
	}
	if s.fleet != nil {
		s.watchFleet()
	}
	return nil
}

// DropPrivileges makes a gateway started as root go on as the configured
// user (config.RunAs), once Start has opened what needs root: the
// listener, the control socket and metrics. The foreground command and the
// service call it; embedders and tests need not. VPN mode stays root.
func (s *Server) DropPrivileges() error {
	return dropPrivileges(s.boot.User, s.boot.VPN.Enable, s.log)
}

// Stop closes the control socket, drains and closes every session, then
// undoes the VPN setup; it is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.ops.stop()
		s.tunnel.Stop() // closes the TUN device after the last session
		s.vpn.close()
		// Last: the sessions have released their addresses, and the
		// goodbye drops this gateway's holds fleet-wide at once.
		s.fleet.Stop()
	})
}

// Status is the gateway's snapshot for `twoway status`.
func (s *Server) Status() control.Status {
	st := gatewayStatus(s.started, s.tunnel, s.store)
	if s.fleet != nil {
		h := s.fleet.Health()
		ss := s.fleet.StoreStats()
		st.Fleet = &control.Fleet{Name: h.Name, Endpoints: h.Endpoints, Reachable: h.Reachable && !ss.Unreachable, LastContact: h.LastContact,
			Refused: ss.Refused, ServedCached: ss.ServedCached, Pending: ss.Pending, PendingReleases: ss.PendingReleases}
	}
	return st
}

// Kick ends every session of identity.
func (s *Server) Kick(identity string) (int, error) { return s.tunnel.Kick(identity), nil }

// Wait blocks until the gateway has stopped and returns the first fatal
// error. A gateway that stopped on its own (a fatal accept error, its
// context cancelled) is stopped completely first, so the VPN setup is
// undone even when nobody calls Stop.
func (s *Server) Wait() error {
	err := s.tunnel.Wait()
	s.Stop()
	return err
}

// Tunnel exposes the running tunnel server (addresses, sessions).
func (s *Server) Tunnel() *tunnel.Server { return s.tunnel }

// Reload re-reads the configuration file, the certificates, keys and CRLs
// and the policy. Everything is validated first; on any error nothing
// changes. Afterwards every live session is re-checked against the new
// CRLs and policy, and those no longer allowed are closed.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg
	if s.path != "" {
		next, err := config.LoadServer(s.path)
		if err != nil {
			return err
		}
		cfg = next
	}
	pol, err := cfg.CompiledPolicy()
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if s.fleetPolicy != nil {
		s.log.Info("the fleet's published policy stays in force over this file's [policy]")
		pol = s.fleetPolicy
	}
	if err := s.store.Reload(); err != nil {
		return fmt.Errorf("reload credentials: %w", err)
	}
	logWarnings(s.log, cfg.Warnings())
	// Compared with the boot configuration, not the last reload's: a
	// second reload must still say that the first one's change waits.
	if b := s.boot; cfg.Listen != b.Listen || !reflect.DeepEqual(cfg.Limits, b.Limits) || !reflect.DeepEqual(cfg.TLS, b.TLS) || cfg.Enroll != b.Enroll || !reflect.DeepEqual(cfg.VPN, b.VPN) ||
		!reflect.DeepEqual(cfg.Control, b.Control) || !reflect.DeepEqual(cfg.Metrics, b.Metrics) || !reflect.DeepEqual(cfg.Log, b.Log) {
		s.log.Warn("listen, [limits], [vpn], [enroll], [control], [metrics], [log] and [tls] settings take effect only after a restart; the certificate, key and CRL files themselves were reloaded")
	}
	s.tunnel.SetPolicy(pol)
	s.cfg = cfg
	s.tunnel.Revalidate()
	return nil
}

// Client is a running client daemon: its port forwards and, when [vpn] is
// enabled, VPN mode over a TUN device.
type Client struct {
	log    *slog.Logger
	store  *pki.Store
	tunnel *tunnel.Client
	ops    *ops
	state  *clientState
	// renewer renews the client certificate; nil with [tls] renew = false.
	renewer *renew.Renewer
	// user and vpn decide the privilege drop after Start (see
	// config.RunAs).
	user string
	vpn  bool

	stopOnce sync.Once
}

// ClientHooks are optional callbacks for embedding (tests, demo, status).
type ClientHooks struct {
	OnSession      func(tunnel.SessionInfo)
	OnDisconnect   func(error)
	OnConnectError func(error)
	OnRemoteListen func(f tunnel.Forward, bound string, err error)
	// OnVPNUp and OnVPNDown follow the VPN of each session (VPN mode).
	OnVPNUp   func(tun.Config)
	OnVPNDown func()
}

// NewClient validates cfg and builds the client without starting it.
func NewClient(cfg *config.Client, hooks ClientHooks, logger *slog.Logger) (*Client, error) {
	store, err := newStore(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.KeyPasswordFile, cfg.TLS.ServerCA, nil, false)
	if err != nil {
		return nil, err
	}
	logWarnings(logger, cfg.Warnings())
	var fwds []tunnel.Forward
	for _, f := range cfg.Forwards {
		tf, err := TunnelForward(f)
		if err != nil {
			return nil, err
		}
		fwds = append(fwds, tf)
	}
	var socksAuth func(user, password string) bool
	if cfg.SOCKS.User != "" {
		pw, err := pki.ReadPasswordFile(cfg.SOCKS.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("socks password: %w", err)
		}
		socksAuth = socks5.StaticCredentials(cfg.SOCKS.User, string(pw))
	}
	pf, puser, ppass, err := clientProxy(cfg.Proxy)
	if err != nil {
		return nil, err
	}
	c := &Client{log: logger, store: store, state: &clientState{}, user: cfg.User, vpn: cfg.VPN.Enable}
	var renewal func() error
	if cfg.TLS.RenewOn() && keystore.CarriesCertificate(cfg.TLS.Key) {
		// Renewal writes files; an OS store identity is renewed by
		// whoever put it there (an MDM, the user).
		logger.Info("certificate renewal off: the identity is in the OS store", "key", cfg.TLS.Key)
	} else if cfg.TLS.RenewOn() {
		if c.renewer, err = newRenewer(&cfg.TLS, store, c, logger); err != nil {
			return nil, err
		}
		renewal = c.renewer.Failing
		c.state.renewer = c.renewer
	}
	if c.ops, err = newOps(config.RoleClient, cfg.Control, cfg.Metrics, store, c, renewal, logger); err != nil {
		return nil, err
	}
	hooks = c.state.chain(hooks)
	var vpn *tunnel.ClientVPN
	if cfg.VPN.Enable {
		if vpn, err = openClientVPN(&cfg.VPN, hooks, logger); err != nil {
			return nil, err
		}
	}
	tc, err := tunnel.NewClient(tunnel.ClientConfig{
		Endpoints:        cfg.Servers,
		ServerName:       cfg.ServerName,
		Pins:             cfg.TLS.Pins,
		Credentials:      store,
		Forwards:         fwds,
		SOCKSAuth:        socksAuth,
		Proxy:            pf,
		ProxyUser:        puser,
		ProxyPassword:    ppass,
		BackoffMin:       cfg.Reconnect.MinBackoff,
		BackoffMax:       cfg.Reconnect.MaxBackoff,
		ShuffleEndpoints: cfg.Reconnect.Order == config.OrderRandom,
		Tuning:           tunnel.Tuning{KeepAliveInterval: cfg.Reconnect.Keepalive, DeadPeerTimeout: cfg.Reconnect.DeadPeer},
		Software:         software(),
		OnSession:        hooks.OnSession,
		OnDisconnect:     hooks.OnDisconnect,
		OnConnectError:   hooks.OnConnectError,
		OnRemoteListen:   hooks.OnRemoteListen,
		VPN:              vpn,
	}, logger)
	if err != nil {
		if vpn != nil {
			_ = vpn.Device.Close()
		}
		return nil, err
	}
	c.tunnel = tc
	return c, nil
}

// Start opens the local listeners and connects, then starts the control
// socket, metrics and expiry warnings; it does not block. On error
// everything is stopped again, the TUN device closed included.
func (c *Client) Start(ctx context.Context) error {
	c.state.setStarted(time.Now())
	if err := c.tunnel.Start(ctx); err != nil {
		c.Stop()
		return err
	}
	if err := c.ops.start(ctx); err != nil {
		c.Stop()
		return err
	}
	if c.renewer != nil {
		if err := c.renewer.Start(ctx); err != nil {
			c.Stop()
			return err
		}
	}
	return nil
}

// DropPrivileges is Server.DropPrivileges for the client: after Start has
// opened the -L/-D listeners, the control socket and metrics.
func (c *Client) DropPrivileges() error { return dropPrivileges(c.user, c.vpn, c.log) }

// Stop closes listeners and the session; it is idempotent.
func (c *Client) Stop() {
	c.stopOnce.Do(func() {
		if c.renewer != nil {
			c.renewer.Stop() // before the tunnel, whose session it may be using
		}
		c.ops.stop()
		c.tunnel.Stop()
	})
}

// Status is the client's snapshot for `twoway status`.
func (c *Client) Status() control.Status { return c.state.status(c.tunnel, c.store) }

// Kick is a gateway operation.
func (c *Client) Kick(string) (int, error) { return 0, errNotGateway }

// Wait blocks until the client has stopped.
func (c *Client) Wait() error {
	err := c.tunnel.Wait()
	c.Stop() // as for Server.Wait: the TUN device and its routes go too
	return err
}

// Tunnel exposes the running tunnel client.
func (c *Client) Tunnel() *tunnel.Client { return c.tunnel }

// Reload re-reads the client certificate, key and server-CA bundle; the
// next (re)connect uses them.
func (c *Client) Reload() error { return c.store.Reload() }

// TunnelForward converts a configured forward into the tunnel's form.
func TunnelForward(f config.Forward) (tunnel.Forward, error) {
	switch f.Type {
	case config.ForwardLocal:
		return tunnel.Forward{Kind: tunnel.ForwardLocal, Listen: f.Local, Target: f.Remote}, nil
	case config.ForwardRemote:
		return tunnel.Forward{Kind: tunnel.ForwardRemote, Listen: f.Remote, Target: f.Local}, nil
	case config.ForwardDynamic:
		return tunnel.Forward{Kind: tunnel.ForwardDynamic, Listen: f.Local}, nil
	}
	return tunnel.Forward{}, fmt.Errorf("forward %s: unknown type %q", f, f.Type)
}

// logWarnings logs what `twoway config check` warns about, so an operator
// who never runs it still sees it.
func logWarnings(logger *slog.Logger, warnings []*config.Error) {
	for _, w := range warnings {
		logger.Warn("configuration: "+w.Err.Error(), "file", w.File, "line", w.Line, "key", w.Key)
	}
}

// openEnroll opens the enrolling CA and decrypts its key now, so that a
// wrong password stops the gateway at start rather than fail the first
// laptop. The CA's database is read afresh on each enrollment, so tokens
// made with `twoway pki token create` meanwhile are seen without a reload.
func openEnroll(cfg *config.ServerEnroll, logger *slog.Logger) (*enroll.Handler, *caRenewer, error) {
	ca, err := authority.OpenCA(cfg.CA, func() ([]byte, error) {
		if cfg.PasswordFile == "" {
			return nil, errors.New("the CA key is encrypted and enroll.password_file is not set")
		}
		return pki.ReadPasswordFile(cfg.PasswordFile)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	if err := ca.Unlock(); err != nil {
		return nil, nil, fmt.Errorf("enroll: CA %s: %w", cfg.CA, err)
	}
	r := &caRenewer{ca: ca, maxLifetime: time.Duration(cfg.RenewMaxDays) * 24 * time.Hour}
	logger.Info("enrollment and renewal enabled", "ca", ca.Name(), "dir", ca.Dir, "renew_max_days", cfg.RenewMaxDays)
	return enroll.NewHandler(ca, logger.With("component", "enroll")), r, nil
}

func newStore(cert, key, passFile, bundle string, crls []string, rejectStale bool) (*pki.Store, error) {
	var pw []byte
	if passFile != "" {
		var err error
		if pw, err = pki.ReadPasswordFile(passFile); err != nil {
			return nil, err
		}
	}
	return pki.NewStore(pki.StoreConfig{CertFile: cert, KeyFile: key, KeyPassword: pw, CABundle: bundle, CRLFiles: crls, RejectStaleCRLs: rejectStale})
}

func software() string {
	return "twoway/" + strings.TrimPrefix(buildinfo.Get().Version, "v")
}

// ErrNoConfig is returned when a command needs a config file and got none.
var ErrNoConfig = errors.New("no configuration file given (use -c FILE)")

// clientProxy turns the client's [proxy] table into the tunnel's proxy
// choice and credentials: a fixed proxy, none ("direct"), or, without a
// URL, the environment's (HTTPS_PROXY, NO_PROXY).
func clientProxy(p config.Proxy) (proxy.Func, string, string, error) {
	var pass string
	if p.User != "" {
		pw, err := pki.ReadPasswordFile(p.PasswordFile)
		if err != nil {
			return nil, "", "", fmt.Errorf("proxy password: %w", err)
		}
		pass = string(pw)
	}
	switch p.URL {
	case config.ProxyDirect:
		return nil, "", "", nil
	case "":
		return proxy.FromEnvironment(), p.User, pass, nil
	}
	u, err := proxy.ParseURL(p.URL)
	if err != nil { // Validate has checked it
		return nil, "", "", err
	}
	return proxy.Fixed(u, p.NoProxy), p.User, pass, nil
}
