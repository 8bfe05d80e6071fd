// Package demo runs a complete twoway setup inside one process, on
// loopback only: a throwaway PKI, a gateway, a client with a port forward,
// and a small HTTP service that the forward reaches through the gateway.
// It then narrates, from the live connection rather than from canned text,
// what each side proved to the other, what the policy granted, and how the
// gateway turns away clients with no certificate or the wrong one. It is
// what `twoway demo` prints.
package demo

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/probe"
	"github.com/twoway/twoway/tunnel"
)

// The demo user and group: the client certificate's CN and its one OU.
const (
	User  = "demo-user"
	Group = "demo"
)

// Options configure Run.
type Options struct {
	// Once runs the walkthrough and returns. Otherwise Run keeps the
	// gateway, client and service up until ctx is cancelled, printing how
	// to try them by hand and what then happens on the gateway.
	Once bool
	// Keep leaves the work directory (PKI, certificates, keys) in place
	// and says where it is; otherwise it is removed.
	Keep bool
	// TempDir is where the work directory is created (os.TempDir()).
	TempDir string
	// Logger receives the gateway's and the client's own logs; nil
	// discards them so that only the narration is printed.
	Logger *slog.Logger
	// Program is how to invoke twoway in the printed commands ("twoway").
	Program string
	// Timeout bounds each step that waits for the network (10 s).
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Program == "" {
		o.Program = "twoway"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return o
}

// Files are what a run writes in its work directory.
type Files struct {
	// PKI holds root/, server-ca/ and client-ca/ (see authority.Init).
	PKI string
	// ServerBundle is what clients verify the gateway with (server CA and
	// root); ClientBundle what the gateway verifies clients with.
	ServerBundle, ClientBundle string
	GatewayCert, GatewayKey    string
	UserCert, UserKey          string
	// OtherPKI is a second, unrelated PKI; ImpostorCert is a certificate
	// for User from its client CA.
	OtherPKI                  string
	ImpostorCert, ImpostorKey string
	// SiblingCert is a client certificate for User issued by this PKI's
	// server CA: same root, wrong issuing CA.
	SiblingCert, SiblingKey string
}

// Report is what a run observed; the printed narration is made from it.
type Report struct {
	// Dir is the work directory (gone after Run unless Options.Keep).
	Dir   string
	Files Files
	// GatewayAddr, ServiceAddr and ForwardAddr are the loopback addresses
	// of the gateway, the service behind it and the client's -L listener.
	GatewayAddr, ServiceAddr, ForwardAddr string
	// Hello is the demo client's ClientHello as the gateway received it,
	// nil if it could not be recorded.
	Hello *ClientHello
	// Gateway and Client are the two sides' views of the demo session.
	Gateway, Client tunnel.SessionInfo
	// Admission is the policy decision that let the client in.
	Admission policy.Decision
	// Exchange is the request sent through the forward and its answer.
	Exchange Exchange
	// Refusals are the clients the gateway turned away, in order: no
	// certificate, a certificate from an unrelated CA, one from the
	// server CA.
	Refusals []Attempt
}

// Exchange is one HTTP request through the forward.
type Exchange struct {
	Request  string // method, URL and body sent
	Status   string
	Body     string
	Duration time.Duration
}

// Attempt is a client the gateway refused: what it presented, what the
// gateway reported through its OnRefuse hook, and what the client got.
type Attempt struct {
	Name string
	// Presented is the client's leaf certificate, nil when it sent none.
	Presented *x509.Certificate
	// Refusal is the gateway's record of it.
	Refusal tunnel.Refusal
	// ClientSaw is the error the client got.
	ClientSaw string
	// AcceptableCAs are the CA names in the gateway's CertificateRequest,
	// as the client received them.
	AcceptableCAs []string
}

// ErrNotRefused means the gateway accepted a client the demo expected it
// to refuse: something is badly wrong.
var ErrNotRefused = errors.New("gateway did not refuse the client")

// Run sets everything up in a new temporary directory, runs the
// walkthrough, writing the narration to w, and (unless opts.Once) keeps
// serving until ctx is cancelled. Everything it started is stopped and,
// unless opts.Keep, the directory removed before it returns. Cancelling
// ctx while waiting for Ctrl-C is not an error.
func Run(ctx context.Context, w io.Writer, opts Options) (rep *Report, err error) {
	opts = opts.withDefaults()
	dir, err := os.MkdirTemp(opts.TempDir, "twoway-demo-")
	if err != nil {
		return nil, fmt.Errorf("demo: work directory: %w", err)
	}
	p := &printer{w: w}
	rep = &Report{Dir: dir}
	defer func() {
		if opts.Keep {
			p.printf("\nKept %s (PKI, certificates and keys of this run).\n", dir)
		} else if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("demo: removing %s: %w", dir, rerr)
		}
		if err == nil && p.err != nil {
			err = fmt.Errorf("demo: writing output: %w", p.err)
		}
	}()

	l := &lab{opts: opts, ev: newEvents()}
	defer l.tearDown() // before the directory goes: deferred calls run last-in first-out
	if err := l.setUp(dir); err != nil {
		return rep, err
	}
	rep.Files = l.files
	rep.GatewayAddr, rep.ServiceAddr, rep.ForwardAddr = l.gw.Addr().String(), l.svc.addr(), l.fwdAddr
	l.printSetup(p, rep)

	if err := l.waitSession(ctx, rep); err != nil {
		return rep, err
	}
	rep.Admission = l.pol.Admit(rep.Gateway.Peer)
	// Only the narration needs the hello; without it the demo goes on.
	rep.Hello, _ = l.rec.take(rep.Gateway.Remote.String())
	l.printHandshake(p, rep)

	if rep.Exchange, err = l.svc.exchange(ctx, rep.ForwardAddr, opts.Timeout); err != nil {
		return rep, fmt.Errorf("demo: request through the forward: %w", err)
	}
	printExchange(p, rep)

	for _, c := range l.refusalCases() {
		a, err := l.attempt(ctx, c)
		if err != nil {
			return rep, err
		}
		rep.Refusals = append(rep.Refusals, a)
	}
	printRefusals(p, rep)

	if opts.Once {
		p.printf("\nDone: stopping the client, the gateway and the service.\n")
		return rep, nil
	}
	l.printTryIt(p, rep)
	l.watch(ctx, p)
	p.printf("\nStopping the client, the gateway and the service.\n")
	return rep, nil
}

// waitSession waits until the demo client and the gateway both report the
// session established. A refusal of the demo client ends the wait with
// the gateway's reason.
func (l *lab) waitSession(ctx context.Context, rep *Report) error {
	timer := time.NewTimer(l.opts.Timeout)
	defer timer.Stop()
	var haveClient, haveGateway bool
	var pending []tunnel.SessionInfo // gateway sessions seen before the client's
	for !haveClient || !haveGateway {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case info := <-l.ev.clientUp:
			rep.Client, haveClient = info, true
			for _, g := range pending {
				if g.ID == info.ID {
					rep.Gateway, haveGateway = g, true
				}
			}
		case info := <-l.ev.gatewayUp:
			if haveClient && info.ID == rep.Client.ID {
				rep.Gateway, haveGateway = info, true
			} else {
				pending = append(pending, info)
			}
		case r := <-l.ev.refused:
			return fmt.Errorf("demo: the gateway refused the demo client at stage %s: %w", r.Stage, r.Err)
		case <-timer.C:
			return fmt.Errorf("demo: no session between the demo client and the gateway within %s (run with --verbose to see their logs)", l.opts.Timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// refusalCase is a client the gateway must turn away.
type refusalCase struct {
	name      string
	cert, key string // empty: no certificate
}

func (l *lab) refusalCases() []refusalCase {
	f := l.files
	return []refusalCase{
		{name: "no certificate"},
		{name: "a certificate from an unrelated PKI", cert: f.ImpostorCert, key: f.ImpostorKey},
		{name: "a client certificate issued by the server CA (sibling of the client CA, same root)", cert: f.SiblingCert, key: f.SiblingKey},
	}
}

// attempt connects as a client would (TLS 1.3, ALPN twoway/1, verifying
// the gateway) with c's certificate, and collects the client's error and
// the gateway's refusal.
func (l *lab) attempt(ctx context.Context, c refusalCase) (Attempt, error) {
	a := Attempt{Name: c.name}
	opts := probe.Options{
		Addr:     l.gw.Addr().String(),
		ALPN:     []string{tunnel.ALPN},
		Verifier: l.clientCreds.Verifier(),
		Timeout:  l.opts.Timeout,
		// A refusal arrives at once; waiting longer only matters if the
		// gateway wrongly accepts, which is then reported.
		AlertWait: l.opts.Timeout / 2,
	}
	if c.cert != "" {
		cert, err := pki.LoadKeyPair(c.cert, c.key, nil)
		if err != nil {
			return a, fmt.Errorf("demo: %w", err)
		}
		opts.ClientCert, a.Presented = cert, cert.Leaf
	}
	res, err := probe.Run(ctx, opts)
	switch {
	case err != nil:
		a.ClientSaw = err.Error()
	case res.ClientCertAccepted != nil && !*res.ClientCertAccepted:
		a.ClientSaw, a.AcceptableCAs = res.ClientCertError, res.AcceptableCAs
	default:
		return a, fmt.Errorf("demo: %s: %w", c.name, ErrNotRefused)
	}
	r, err := l.ev.waitRefusal(ctx, l.opts.Timeout, func(r tunnel.Refusal) bool {
		if a.Presented == nil {
			return r.Presented == nil && r.Identity == nil
		}
		return r.Presented != nil && r.Presented.Fingerprint == pki.Fingerprint(a.Presented)
	})
	if err != nil {
		return a, fmt.Errorf("demo: %s: %w", c.name, err)
	}
	a.Refusal = r
	return a, nil
}
