package fleet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Session ticket keys, shared: a client that moves to another gateway of
// the fleet resumes its TLS session there (tunnel/tickets.go says what
// resumption checks). The keys live under <prefix>tickets as one JSON
// document; every gateway watches it, and whichever gateway first sees
// the newest key due for rotation replaces the set in a transaction, so
// two gateways rotating at once produce one new key, not two. The keys are
// secrets: etcd must be reached over mutual TLS in production, and they
// are never logged.

// ticketDoc is the stored form.
type ticketDoc struct {
	Rotated time.Time  `json:"rotated"`
	Keys    [][32]byte `json:"keys"` // newest first
}

// TicketKeys is the fleet's shared set of session ticket keys; it
// implements tunnel.TicketKeys. Get it with StartTicketKeys.
type TicketKeys struct {
	f      *Fleet
	rotate time.Duration
	keep   int

	// cur is the set as last seen in etcd; nil until the first read.
	cur   chan *ticketDoc // a one-slot box, so readers never block the watch
	ready chan struct{}   // closed at the first set
	once  sync.Once
}

// StartTicketKeys starts sharing ticket keys: a new key every rotate, each
// kept for keep rotations. It waits up to DialTimeout for the first read,
// so that the gateway's first clients get tickets; until a read succeeds
// the set is empty (no tickets are issued; clients make full handshakes).
// Call it after Start.
func (f *Fleet) StartTicketKeys(rotate time.Duration, keep int) *TicketKeys {
	k := &TicketKeys{f: f, rotate: rotate, keep: keep, cur: make(chan *ticketDoc, 1), ready: make(chan struct{})}
	k.cur <- nil
	f.wg.Add(1)
	go k.run()
	select {
	case <-k.ready:
	case <-time.After(f.cfg.DialTimeout):
		f.logger.Warn("fleet ticket keys not read yet; no session tickets until they are")
	case <-f.ctx.Done():
	}
	return k
}

// TicketKeys returns the keys, newest first.
func (k *TicketKeys) TicketKeys() [][32]byte {
	d := <-k.cur
	k.cur <- d
	if d == nil {
		return nil
	}
	return append([][32]byte(nil), d.Keys...)
}

func (k *TicketKeys) set(d *ticketDoc) {
	<-k.cur
	k.cur <- d
	k.once.Do(func() { close(k.ready) })
}

func (k *TicketKeys) key() string { return k.f.cfg.Prefix + "tickets" }

// run keeps the set current: read it, rotate it when due, and follow
// every change, until the fleet stops.
func (k *TicketKeys) run() {
	defer k.f.wg.Done()
	k.f.retry("fleet ticket keys: etcd unavailable; retrying", k.follow)
}

// follow reads the set, rotates it if due, and then watches it, rotating
// again whenever the newest key grows old. It returns on an etcd error.
func (k *TicketKeys) follow() error {
	f := k.f
	for {
		ctx, cancel := f.opContext()
		resp, err := f.cli.Get(ctx, k.key())
		cancel()
		if err != nil {
			return err
		}
		var d *ticketDoc
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			d = new(ticketDoc)
			if err := json.Unmarshal(resp.Kvs[0].Value, d); err != nil {
				f.logger.Error("fleet ticket keys do not parse; replacing them", "key", k.key(), "err", err)
				d = nil
			}
		}
		now := time.Now()
		if d == nil || len(d.Keys) == 0 || now.Sub(d.Rotated) >= k.rotate {
			next := k.rotated(d, now)
			data, _ := json.Marshal(next) // fixed-size arrays and a time: cannot fail
			ctx, cancel := f.opContext()
			tr, err := f.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(k.key()), "=", rev)).
				Then(clientv3.OpPut(k.key(), string(data))).
				Commit()
			cancel()
			if err != nil {
				return err
			}
			if !tr.Succeeded {
				continue // another gateway rotated first: read theirs
			}
			d, rev = next, tr.Header.Revision
			f.logger.Info("rotated the fleet's session ticket keys", "keys", len(d.Keys))
		}
		k.set(d)
		// Wait for a change, or until the newest key is due.
		due := time.Until(d.Rotated.Add(k.rotate))
		if err := k.waitChange(rev, due); err != nil {
			return err
		}
	}
}

// rotated returns d with a new key in front and at most keep keys.
func (k *TicketKeys) rotated(d *ticketDoc, now time.Time) *ticketDoc {
	var key [32]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read does not fail
	next := &ticketDoc{Rotated: now, Keys: [][32]byte{key}}
	if d != nil {
		next.Keys = append(next.Keys, d.Keys...)
	}
	if len(next.Keys) > k.keep {
		next.Keys = next.Keys[:k.keep]
	}
	return next
}

// waitChange returns when the key changes after rev or after d, whichever
// comes first.
func (k *TicketKeys) waitChange(rev int64, d time.Duration) error {
	f := k.f
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(f.ctx), max(d, 0))
	defer cancel()
	for wr := range f.cli.Watch(ctx, k.key(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			if ctx.Err() != nil {
				return nil // due
			}
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	return nil // ended by the timeout or by Stop; follow checks which
}
