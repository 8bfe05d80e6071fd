package demo

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tunnel"
)

// ruleName names the policy rule that lets the demo group reach the
// service.
const ruleName = "demo-service"

// lab is everything one run sets up. tearDown stops what setUp started,
// whatever point setUp reached.
type lab struct {
	opts  Options
	files Files
	ev    *events

	// CA names of the demo PKI and the unrelated one, for the setup text.
	rootName, serverCAName, clientCAName, otherCAName string

	svc          *service
	pol          *policy.Policy
	gatewayCreds *pki.Store
	clientCreds  *pki.Store
	rec          *helloRecorder
	gw           *tunnel.Server
	cl           *tunnel.Client
	fwdAddr      string
}

func (l *lab) setUp(dir string) error {
	if err := l.makePKI(dir); err != nil {
		return err
	}
	var err error
	if l.svc, err = startService(); err != nil {
		return fmt.Errorf("demo: service: %w", err)
	}
	// The policy is the point of a gateway: the demo group may connect and
	// reach the demo service, and nothing else.
	l.pol, err = policy.New(policy.Config{
		Admit: policy.Admission{Groups: []string{Group}},
		Rules: []policy.Rule{{
			Name: ruleName, Groups: []string{Group},
			Targets: []string{l.svc.addr()}, Protocols: []string{"tcp"},
		}},
	})
	if err != nil {
		return fmt.Errorf("demo: policy: %w", err)
	}
	f := l.files
	// The same files the printed commands use, loaded the way the daemons
	// load them.
	if l.gatewayCreds, err = pki.NewStore(pki.StoreConfig{CertFile: f.GatewayCert, KeyFile: f.GatewayKey, CABundle: f.ClientBundle}); err != nil {
		return fmt.Errorf("demo: gateway credentials: %w", err)
	}
	if l.clientCreds, err = pki.NewStore(pki.StoreConfig{CertFile: f.UserCert, KeyFile: f.UserKey, CABundle: f.ServerBundle}); err != nil {
		return fmt.Errorf("demo: client credentials: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: gateway: %w", err)
	}
	l.rec = newHelloRecorder(ln)
	gw, err := tunnel.NewServer(tunnel.ServerConfig{
		Listener:               l.rec,
		Credentials:            l.gatewayCreds,
		Policy:                 l.pol,
		DrainTimeout:           2 * time.Second,
		HandshakeRate:          tunnel.DefaultHandshakeRate,
		HandshakeBurst:         tunnel.DefaultHandshakeBurst,
		MaxSessionsPerIdentity: tunnel.DefaultMaxSessionsPerIdentity,
		OnSession:              l.ev.onGatewaySession,
		OnRefuse:               l.ev.onRefuse,
		OnSessionEnd:           l.ev.onSessionEnd,
	}, l.opts.Logger.With("side", "gateway"))
	if err != nil {
		ln.Close()
		return fmt.Errorf("demo: gateway: %w", err)
	}
	// Background, not the caller's context: tearDown stops it, in order.
	if err := gw.Start(context.Background()); err != nil {
		ln.Close()
		return fmt.Errorf("demo: gateway: %w", err)
	}
	l.gw = gw

	fwd := tunnel.Forward{Kind: tunnel.ForwardLocal, Listen: "127.0.0.1:0", Target: l.svc.addr()}
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Endpoints:    []string{gw.Addr().String()},
		Credentials:  l.clientCreds,
		Forwards:     []tunnel.Forward{fwd},
		DrainTimeout: 2 * time.Second,
		OnSession:    l.ev.onClientSession,
		OnDisconnect: l.ev.onDisconnect,
	}, l.opts.Logger.With("side", "client"))
	if err != nil {
		return fmt.Errorf("demo: client: %w", err)
	}
	if err := cl.Start(context.Background()); err != nil {
		return fmt.Errorf("demo: client: %w", err)
	}
	l.cl = cl
	l.fwdAddr = cl.Forwards()[0].Local.String()
	return nil
}

// tearDown stops the client first, so that its session ends before the
// gateway drains, then the gateway, then the service behind it.
func (l *lab) tearDown() {
	if l.cl != nil {
		l.cl.Stop()
		_ = l.cl.Wait() // a client has no fatal errors of its own
	}
	if l.gw != nil {
		l.gw.Stop()
		_ = l.gw.Wait() // nothing to report: the demo is over either way
	}
	if l.svc != nil {
		l.svc.close()
	}
}

// makePKI creates the demo PKI and the certificates of the gateway, the
// demo user and the two impostors, all unencrypted (throwaway keys).
func (l *lab) makePKI(dir string) error {
	f := &l.files
	f.PKI = filepath.Join(dir, "pki")
	res, err := authority.Init(f.PKI, authority.InitOptions{Org: "twoway demo"})
	if err != nil {
		return fmt.Errorf("demo: PKI: %w", err)
	}
	l.rootName, l.serverCAName, l.clientCAName = res.Root.Name(), res.ServerCA.Name(), res.ClientCA.Name()
	f.ServerBundle = filepath.Join(res.ServerCA.Dir, authority.BundleFile)
	f.ClientBundle = filepath.Join(res.ClientCA.Dir, authority.BundleFile)

	issue := func(ca *authority.CA, req authority.IssueRequest, cert, key *string) error {
		iss, err := ca.Issue(req)
		if err != nil {
			return fmt.Errorf("demo: issue %s %s: %w", req.Kind, req.Name, err)
		}
		*cert, *key = iss.CertFile, iss.KeyFile
		return nil
	}
	client := func(out string) authority.IssueRequest {
		return authority.IssueRequest{Kind: authority.KindClient, Name: User, Groups: []string{Group}, OutDir: filepath.Join(dir, out)}
	}
	if err := issue(res.ServerCA, authority.IssueRequest{
		Kind: authority.KindServer, Name: "127.0.0.1", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv6loopback},
		OutDir: filepath.Join(dir, "gateway"),
	}, &f.GatewayCert, &f.GatewayKey); err != nil {
		return err
	}
	if err := issue(res.ClientCA, client(User), &f.UserCert, &f.UserKey); err != nil {
		return err
	}
	// The same name and group from the wrong issuer: a client CA is not
	// trusted for being under the same root.
	if err := issue(res.ServerCA, client("sibling"), &f.SiblingCert, &f.SiblingKey); err != nil {
		return err
	}
	f.OtherPKI = filepath.Join(dir, "other-pki")
	other, err := authority.Init(f.OtherPKI, authority.InitOptions{Org: "unrelated"})
	if err != nil {
		return fmt.Errorf("demo: second PKI: %w", err)
	}
	l.otherCAName = other.ClientCA.Name()
	return issue(other.ClientCA, client("impostor"), &f.ImpostorCert, &f.ImpostorKey)
}

// events carries the tunnel's hooks to the demo. The hooks must not block
// the tunnel, so an event that finds its queue full is counted and
// dropped; the queues are far larger than a run needs.
type events struct {
	gatewayUp  chan tunnel.SessionInfo
	sessionEnd chan sessionEnd
	refused    chan tunnel.Refusal
	clientUp   chan tunnel.SessionInfo
	clientDown chan error
	dropped    atomic.Int64
}

type sessionEnd struct {
	info tunnel.SessionInfo
	err  error
}

const eventQueue = 256

func newEvents() *events {
	return &events{
		gatewayUp:  make(chan tunnel.SessionInfo, eventQueue),
		sessionEnd: make(chan sessionEnd, eventQueue),
		refused:    make(chan tunnel.Refusal, eventQueue),
		clientUp:   make(chan tunnel.SessionInfo, eventQueue),
		clientDown: make(chan error, eventQueue),
	}
}

func offer[T any](e *events, ch chan T, v T) {
	select {
	case ch <- v:
	default:
		e.dropped.Add(1)
	}
}

func (e *events) onGatewaySession(i tunnel.SessionInfo) { offer(e, e.gatewayUp, i) }
func (e *events) onRefuse(r tunnel.Refusal)             { offer(e, e.refused, r) }
func (e *events) onClientSession(i tunnel.SessionInfo)  { offer(e, e.clientUp, i) }
func (e *events) onDisconnect(err error)                { offer(e, e.clientDown, err) }
func (e *events) onSessionEnd(i tunnel.SessionInfo, err error) {
	offer(e, e.sessionEnd, sessionEnd{i, err})
}

// waitRefusal returns the next refusal that match accepts, skipping
// others (someone else's connection).
func (e *events) waitRefusal(ctx context.Context, timeout time.Duration, match func(tunnel.Refusal) bool) (tunnel.Refusal, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r := <-e.refused:
			if match(r) {
				return r, nil
			}
		case <-timer.C:
			return tunnel.Refusal{}, fmt.Errorf("the gateway reported no refusal within %s", timeout)
		case <-ctx.Done():
			return tunnel.Refusal{}, ctx.Err()
		}
	}
}
