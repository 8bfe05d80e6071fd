package daemon

import (
	"context"
	"errors"
	"log/slog"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/expiry"
	"github.com/twoway/twoway/metrics"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/tunnel"
)

// statusSource is what a daemon offers its control socket and metrics.
type statusSource interface {
	Status() control.Status
	Kick(identity string) (int, error)
}

// ops are the operator-facing parts every daemon runs beside its tunnel:
// the control socket, the optional metrics endpoint and certificate expiry
// warnings. None of them can stop the tunnel: a control socket that cannot
// be created is logged, not fatal, because a gateway that refuses to run
// for want of its status socket helps nobody.
type ops struct {
	log     *slog.Logger
	role    config.Role
	cc      config.Control
	control *control.Server
	metrics *metrics.Server // nil when off
	expiry  *expiry.Watcher
}

// renewal, if set, is the client's renewal state for the expiry warnings
// (renew.Renewer.Failing).
func newOps(role config.Role, cc config.Control, mc config.Metrics, store *pki.Store, src statusSource, renewal func() error, logger *slog.Logger) (*ops, error) {
	o := &ops{log: logger, role: role, cc: cc}
	var err error
	if mc.Listen != "" {
		if o.metrics, err = metrics.New(metrics.Config{Listen: mc.Listen, Source: src, Process: true}, logger.With("component", "metrics")); err != nil {
			return nil, err
		}
	}
	o.expiry, err = expiry.New(expiry.Config{Certificates: expiry.FromCredentials(store), CRLs: expiry.CRLsFromCredentials(store), Changed: store.Subscribe(), Renewal: renewal}, logger.With("component", "expiry"))
	if err != nil {
		return nil, err
	}
	if cc.Socket != config.ControlOff {
		path := cc.Socket
		if path == "" {
			path = control.DefaultPath(role)
		}
		if o.control, err = control.New(control.Config{Path: path, Source: src}, logger.With("component", "control")); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// start starts what can be started; only the metrics listener, which the
// operator asked for explicitly, is fatal.
func (o *ops) start(ctx context.Context) error {
	if o.metrics != nil {
		if err := o.metrics.Start(ctx); err != nil {
			return err
		}
	}
	if err := o.expiry.Start(ctx); err != nil {
		return err
	}
	if o.control != nil {
		if err := o.control.Start(ctx); err != nil {
			o.log.Warn("control socket unavailable: `twoway status` will not reach this daemon", "err", err)
			o.control = nil
		}
	}
	return nil
}

func (o *ops) stop() {
	if o.control != nil {
		o.control.Stop()
		_ = o.control.Wait()
	}
	o.expiry.Stop()
	_ = o.expiry.Wait()
	if o.metrics != nil {
		o.metrics.Stop()
		_ = o.metrics.Wait()
	}
}

// observeSession and observeRefusal feed the handshake counters.
func (o *ops) observeSession(tunnel.SessionInfo) {
	if o != nil && o.metrics != nil {
		o.metrics.ObserveAccepted()
	}
}

func (o *ops) observeRefusal(r tunnel.Refusal) {
	if o != nil && o.metrics != nil {
		o.metrics.ObserveRefusal(r.Stage, r.Err)
	}
}

// observeRenewal counts a renewal at the gateway.
func (o *ops) observeRenewal(r tunnel.RenewOutcome) {
	if o != nil && o.metrics != nil {
		o.metrics.ObserveRenewal(r.Outcome)
	}
}

// errNotGateway answers kick on a client.
var errNotGateway = errors.New("kick is a gateway command; this is a client")
