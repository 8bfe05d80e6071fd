// Package fleet joins a gateway to a fleet of gateways that share their
// state through etcd v3, so that a user keeps their VPN address whichever
// gateway they land on and no two gateways hand one address to two users.
//
// A gateway is one etcd client with one etcd lease, kept alive while the
// gateway runs. Everything the gateway holds for its live sessions is a key
// attached to that lease: when the gateway dies its lease runs out after
// Config.LeaseTTL and etcd deletes those keys by itself, and when it stops
// cleanly it revokes the lease, which deletes them at once.
//
// What is shared so far: the address allocator (Addresses, an ipam.Store).
//
// Typical use by the daemon:
//
//	f, err := fleet.New(cfg.Fleet, logger.With("component", "fleet"))
//	if err := f.Start(ctx); err != nil { ... etcd unreachable ... }
//	defer f.Stop()
//	pool, err := ipam.NewWithStore(cfg.VPN.Pool(), f.Addresses(), logger)
package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fleet is this gateway's membership in the fleet. Create it with New.
type Fleet struct {
	cfg    Config
	tls    *tls.Config // nil: plain connections
	logger *slog.Logger
	addrs  *addressStore

	// Set by Start, read-only after it.
	cli    *clientv3.Client
	ctx    context.Context // the background work's; cancelled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the keepalive and the address watch

	leaseMu sync.Mutex
	lease   clientv3.LeaseID // guarded by leaseMu

	stopOnce sync.Once
	stopped  chan struct{}

	// noGoodbye makes Stop leave the lease to expire, like a gateway that
	// died (tests).
	noGoodbye bool

	// sessOps queues session registry writes; nil until StartRegistry.
	sessOps chan sessionOp
	// sessRefile asks the registry to write every session again now:
	// keepAlive took a new lease, and the entries under the old one
	// vanish with it. Buffered; made by New, so keepAlive may send to it
	// whether or not the registry runs.
	sessRefile chan struct{}

	// lastAlive is when etcd last renewed the lease (UnixNano), for
	// Health.
	lastAlive atomic.Int64
}

// Health is what a gateway knows of its link to the fleet's store.
type Health struct {
	Name      string
	Endpoints []string
	// Reachable: etcd renewed this gateway's lease within LeaseTTL.
	Reachable bool
	// LastContact is when etcd last renewed the lease.
	LastContact time.Time
}

// Health reports whether etcd has been renewing this gateway's lease.
func (f *Fleet) Health() Health {
	h := Health{Name: f.cfg.Name, Endpoints: f.cfg.Endpoints}
	if ns := f.lastAlive.Load(); ns != 0 {
		h.LastContact = time.Unix(0, ns)
		h.Reachable = time.Since(h.LastContact) < f.cfg.LeaseTTL
	}
	return h
}

// New validates cfg (see Config.Validate) and reads its TLS files; it does
// not connect.
func New(cfg Config, logger *slog.Logger) (*Fleet, error) {
	cfg = cfg.withDefaults()
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, tls: tc, logger: logger, stopped: make(chan struct{}), sessRefile: make(chan struct{}, 1)}
	f.addrs = newAddressStore(f)
	return f, nil
}

// Name returns this gateway's name in the fleet.
func (f *Fleet) Name() string { return f.cfg.Name }

// Start connects to etcd and takes this gateway's lease, failing when etcd
// does not grant it within DialTimeout. It does not block beyond that: the
// lease is kept alive in the background until Stop or until ctx is
// cancelled, and taken anew (with this gateway's holds) if etcd lets it
// expire, say after a partition longer than LeaseTTL.
func (f *Fleet) Start(ctx context.Context) error {
	cli, err := newClient(f.cfg, f.tls, f.logger)
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	lease, err := cli.Grant(gctx, int64(f.cfg.LeaseTTL/time.Second))
	cancel()
	if err != nil {
		cli.Close()
		return fmt.Errorf("fleet: take a lease from etcd at %v: %w", f.cfg.Endpoints, err)
	}
	f.cli = cli
	f.lease = lease.ID
	f.lastAlive.Store(time.Now().UnixNano())
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.logger.Info("joined the fleet", "name", f.cfg.Name, "lease", fmt.Sprintf("%x", lease.ID), "ttl", f.cfg.LeaseTTL)
	f.wg.Add(1)
	go f.keepAlive(lease.ID)
	return nil
}

// keepAlive keeps the lease alive and, when etcd lets it expire or
// someone revokes it, takes a new one and puts this gateway's holds under
// it again.
func (f *Fleet) keepAlive(id clientv3.LeaseID) {
	defer f.wg.Done()
	for {
		if ch, err := f.cli.KeepAlive(f.ctx, id); err == nil {
			for range ch {
				f.lastAlive.Store(time.Now().UnixNano())
			}
		}
		if f.ctx.Err() != nil {
			return
		}
		f.logger.Warn("fleet lease lost: this gateway's holds vanished; taking a new lease", "lease", fmt.Sprintf("%x", id))
		var ok bool
		if id, ok = f.regrant(); !ok {
			return
		}
		f.addrs.reassert(f.ctx)
		// The registry's entries too, rather than at the next
		// refresh: a quorum loss ends the keepalive like a lost lease,
		// and the old lease, still alive in etcd, takes them along
		// when it runs out.
		select {
		case f.sessRefile <- struct{}{}:
		default:
		}
	}
}

// regrant takes a new lease, retrying with backoff while etcd is away. It
// fails only when the fleet stops.
func (f *Fleet) regrant() (clientv3.LeaseID, bool) {
	backoff := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
		resp, err := f.cli.Grant(ctx, int64(f.cfg.LeaseTTL/time.Second))
		cancel()
		if err == nil {
			f.leaseMu.Lock()
			f.lease = resp.ID
			f.leaseMu.Unlock()
			f.logger.Info("took a new fleet lease", "lease", fmt.Sprintf("%x", resp.ID))
			return resp.ID, true
		}
		if f.ctx.Err() != nil {
			return 0, false
		}
		f.logger.Warn("cannot take a fleet lease; retrying", "err", err, "in", backoff)
		select {
		case <-f.ctx.Done():
			return 0, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// leaseID returns the lease that this gateway's keys are attached to.
func (f *Fleet) leaseID() clientv3.LeaseID {
	f.leaseMu.Lock()
	defer f.leaseMu.Unlock()
	return f.lease
}

// opContext returns the context of one request to etcd.
func (f *Fleet) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.ctx, f.cfg.DialTimeout)
}

// Stop ends the background work and says goodbye: it revokes the lease, so
// this gateway's holds vanish at once rather than after LeaseTTL. It is
// idempotent, and safe to call without Start or on a nil *Fleet.
func (f *Fleet) Stop() {
	if f == nil {
		return // no fleet configured: the daemon calls Stop regardless
	}
	f.stopOnce.Do(func() {
		defer close(f.stopped)
		if f.cli == nil {
			return
		}
		// The watch and the keepalive first: a keepalive left running
		// would take a new lease as soon as the old one is revoked.
		f.cancel()
		f.wg.Wait()
		if !f.noGoodbye {
			ctx, cancel := context.WithTimeout(context.Background(), f.cfg.DialTimeout)
			if _, err := f.cli.Revoke(ctx, f.leaseID()); err != nil {
				f.logger.Warn("could not revoke the fleet lease; this gateway's holds vanish when it expires",
					"err", err, "ttl", f.cfg.LeaseTTL)
			}
			cancel()
		}
		if err := f.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			f.logger.Warn("closing the etcd client", "err", err)
		}
	})
}

// Wait blocks until Stop has finished. It returns the first fatal error;
// there is none yet: etcd outages are retried, not fatal.
func (f *Fleet) Wait() error {
	<-f.stopped
	return nil
}

// newClient makes the etcd client of cfg (tc nil: plain connections).
func newClient(cfg Config, tc *tls.Config, logger *slog.Logger) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tc,
		Logger:      zapLogger(logger),
		// Notice a dead etcd member within seconds, not at the next
		// request's timeout.
		DialKeepAliveTime:    cfg.LeaseTTL / 2,
		DialKeepAliveTimeout: cfg.DialTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: etcd client: %w", err)
	}
	return cli, nil
}

// oneOff connects as cfg says, runs do within DialTimeout and disconnects:
// the publish commands, which need no lease of their own.
func oneOff(ctx context.Context, cfg Config, do func(ctx context.Context, cli *clientv3.Client, prefix string) error) error {
	cfg = cfg.withDefaults()
	tc, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	cli, err := newClient(cfg, tc, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	return do(ctx, cli, cfg.Prefix)
}
