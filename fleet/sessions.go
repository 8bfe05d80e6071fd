package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The session registry. Every gateway files its live sessions under
// <prefix>sessions/<gateway>/<session>, attached to its etcd lease, so a
// dead gateway's sessions vanish from `twoway status --fleet` when its
// lease expires, without anyone cleaning up. Writes leave the session's
// path at once (a queue and one goroutine), and the whole set is written
// again every RefreshSessions, which also carries the byte counters and
// puts everything under a new lease after a lost one.
//
// Kicks travel the other way: `twoway kick --fleet alice` files a request
// under <prefix>kick/; every gateway watches there, ends alice's sessions
// and answers under <prefix>kicked/<request>/<gateway> with how many.

// RefreshSessions is how often a gateway writes all its sessions again.
const RefreshSessions = 30 * time.Second

// SessionRecord is one live session as the fleet sees it.
type SessionRecord struct {
	Gateway   string    `json:"gateway"`
	ID        string    `json:"id"`
	Identity  string    `json:"identity"`
	Issuer    string    `json:"issuer,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	Groups    []string  `json:"groups,omitempty"`
	Remote    string    `json:"remote,omitempty"`
	Addresses []string  `json:"addresses,omitempty"`
	Since     time.Time `json:"since"`
	BytesIn   uint64    `json:"bytes_in"`
	BytesOut  uint64    `json:"bytes_out"`
}

// sessionOp is a registry write: a put, or a delete when rec is nil.
type sessionOp struct {
	id  string
	rec *SessionRecord
}

func (f *Fleet) sessionKey(gateway, id string) string {
	return f.cfg.Prefix + "sessions/" + gateway + "/" + id
}

// StartRegistry starts filing this gateway's sessions: live returns them
// all (for the periodic refresh). Call it after Start; then PutSession and
// DeleteSession.
func (f *Fleet) StartRegistry(live func() []SessionRecord) {
	f.sessOps = make(chan sessionOp, 4096)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(RefreshSessions)
		defer t.Stop()
		for {
			select {
			case <-f.ctx.Done():
				return
			case op := <-f.sessOps:
				f.writeSession(op)
			case <-t.C:
				for _, r := range live() {
					f.writeSession(sessionOp{id: r.ID, rec: &r})
				}
			case <-f.sessRefile:
				for _, r := range live() {
					f.writeSession(sessionOp{id: r.ID, rec: &r})
				}
				t.Reset(RefreshSessions)
			}
		}
	}()
}

// PutSession files (or refreshes) a live session. It does not block: when
// the queue is full the write waits for the next refresh.
func (f *Fleet) PutSession(r SessionRecord) { f.queueSession(sessionOp{id: r.ID, rec: &r}) }

// DeleteSession removes an ended session.
func (f *Fleet) DeleteSession(id string) { f.queueSession(sessionOp{id: id}) }

func (f *Fleet) queueSession(op sessionOp) {
	if f.sessOps == nil {
		return
	}
	select {
	case f.sessOps <- op:
	default:
		f.logger.Warn("fleet session registry queue full; the next refresh catches up", "session", op.id)
	}
}

func (f *Fleet) writeSession(op sessionOp) {
	ctx, cancel := f.opContext()
	defer cancel()
	key := f.sessionKey(f.cfg.Name, op.id)
	var err error
	if op.rec == nil {
		_, err = f.cli.Delete(ctx, key)
	} else {
		op.rec.Gateway = f.cfg.Name
		data, _ := json.Marshal(op.rec) // strings, numbers and a time: cannot fail
		_, err = f.cli.Put(ctx, key, string(data), clientv3.WithLease(f.leaseID()))
	}
	if err != nil && f.ctx.Err() == nil {
		f.logger.Warn("fleet session registry not updated", "session", op.id, "err", err)
	}
}

// Sessions returns every live session of the fleet, by gateway and start.
func (f *Fleet) Sessions(ctx context.Context) ([]SessionRecord, error) {
	resp, err := f.cli.Get(ctx, f.cfg.Prefix+"sessions/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("fleet: read the session registry: %w", err)
	}
	out := make([]SessionRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r SessionRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			f.logger.Warn("fleet session record does not parse; skipped", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// WatchKicks ends sessions that a kick anywhere in the fleet asks for:
// kick ends the named identity's sessions here and returns how many.
// Call it after Start.
func (f *Fleet) WatchKicks(kick func(identity string) int) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.retry("fleet kick watch interrupted; watching again", func() error {
			wch := f.cli.Watch(clientv3.WithRequireLeader(f.ctx), f.cfg.Prefix+"kick/", clientv3.WithPrefix())
			for wr := range wch {
				if err := wr.Err(); err != nil {
					return err
				}
				for _, ev := range wr.Events {
					if ev.Type != clientv3.EventTypePut || !ev.IsCreate() {
						continue
					}
					req := strings.TrimPrefix(string(ev.Kv.Key), f.cfg.Prefix+"kick/")
					n := kick(string(ev.Kv.Value))
					ctx, cancel := f.opContext()
					_, err := f.cli.Put(ctx, f.cfg.Prefix+"kicked/"+req+"/"+f.cfg.Name, strconv.Itoa(n), clientv3.WithLease(f.leaseID()))
					cancel()
					if err != nil {
						f.logger.Warn("fleet kick not answered", "identity", string(ev.Kv.Value), "err", err)
					}
				}
			}
			return fmt.Errorf("watch closed")
		})
	}()
}

// Kick asks every gateway of the fleet to end identity's sessions and
// returns, after wait, how many each gateway that answered ended. The
// request lives under this gateway's lease and is removed afterwards.
func (f *Fleet) Kick(ctx context.Context, identity string, wait time.Duration) (map[string]int, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	req := hex.EncodeToString(b[:])
	if _, err := f.cli.Put(ctx, f.cfg.Prefix+"kick/"+req, identity, clientv3.WithLease(f.leaseID())); err != nil {
		return nil, fmt.Errorf("fleet: file the kick: %w", err)
	}
	defer func() {
		dctx, cancel := f.opContext()
		defer cancel()
		_, _ = f.cli.Delete(dctx, f.cfg.Prefix+"kick/"+req)
		_, _ = f.cli.Delete(dctx, f.cfg.Prefix+"kicked/"+req+"/", clientv3.WithPrefix())
	}()
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	resp, err := f.cli.Get(ctx, f.cfg.Prefix+"kicked/"+req+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("fleet: read the kick's answers: %w", err)
	}
	out := map[string]int{}
	for _, kv := range resp.Kvs {
		n, _ := strconv.Atoi(string(kv.Value))
		out[strings.TrimPrefix(string(kv.Key), f.cfg.Prefix+"kicked/"+req+"/")] = n
	}
	return out, nil
}
