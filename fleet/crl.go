package fleet

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Revocation, fleet-wide. `twoway fleet publish-crl` puts a CA's CRL under
// <prefix>crl/<issuer id>, where every gateway watches for it: each one
// hands the lists to its pki.Store (Publish), which keeps per issuer the
// newest of its files and the fleet's, and re-checks its live sessions.
// A whole CRL rather than a list of serials, because a CRL is signed by
// its CA: a gateway trusts it for that signature, not for coming out of
// etcd, so whoever can write to etcd cannot revoke, or un-revoke, at will.
// CRL numbers only go up: PublishCRL refuses one no newer than what the
// fleet holds, and the store refuses a rollback too.

// ErrCRLNotNewer means the fleet already holds a CRL of the same issuer
// with the same or a higher number.
var ErrCRLNotNewer = errors.New("the fleet already holds a CRL of this issuer at least as new")

// maxCRLBytes keeps a CRL under etcd's default request limit (1.5 MiB)
// with room for the rest of the request.
const maxCRLBytes = 1 << 20

// crlPrefix is where the fleet's CRLs live.
func (f *Fleet) crlPrefix() string { return f.cfg.Prefix + "crl/" }

// crlID names an issuer's CRL key: its name and key identifier, the pair
// pki uses to tell CRL number sequences apart.
func crlID(crl *x509.RevocationList) string {
	h := sha256.New()
	h.Write(crl.RawIssuer)
	h.Write([]byte{0})
	h.Write(crl.AuthorityKeyId)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// PublishCRL puts crl in the fleet's store, for every gateway to apply
// within moments. It refuses a CRL without a number, one larger than
// 1 MiB, and one no newer than the fleet's (ErrCRLNotNewer). It does not
// check the signature: every gateway does, against its own CA bundle.
func PublishCRL(ctx context.Context, cli *clientv3.Client, prefix string, crl *x509.RevocationList) error {
	if crl.Number == nil {
		return errors.New("the CRL has no CRL number")
	}
	if len(crl.Raw) > maxCRLBytes {
		return fmt.Errorf("the CRL is %d bytes; the fleet takes at most %d (etcd's request limit)", len(crl.Raw), maxCRLBytes)
	}
	key := prefix + "crl/" + crlID(crl)
	for {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read the fleet's CRL: %w", err)
		}
		var rev int64 // 0: no CRL of this issuer yet
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			rev = kv.ModRevision
			if old, err := x509.ParseRevocationList(kv.Value); err == nil && old.Number != nil && crl.Number.Cmp(old.Number) <= 0 {
				return fmt.Errorf("%w: it holds number %s, this one is %s", ErrCRLNotNewer, old.Number, crl.Number)
			}
		}
		tr, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(crl.Raw))).
			Commit()
		if err != nil {
			return fmt.Errorf("publish the CRL: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
		// Someone published meanwhile: compare with theirs.
	}
}

// WatchCRLs calls apply with every CRL the fleet holds, at once and again
// after every change, until Stop; apply runs on one goroutine, never two
// at once. An entry that does not parse is logged and left out, so it
// cannot keep the others from applying. Call it after Start.
func (f *Fleet) WatchCRLs(apply func([]*x509.RevocationList)) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.retry("fleet CRL watch interrupted; reading them again", func() error {
			rev, err := f.loadCRLs(apply)
			if err != nil {
				return err
			}
			return f.watchCRLs(rev, apply)
		})
	}()
}

// retry runs fn until the fleet stops, logging msg and backing off (100 ms
// doubling to 5 s) each time it returns.
func (f *Fleet) retry(msg string, fn func() error) {
	backoff := 100 * time.Millisecond
	for f.ctx.Err() == nil {
		start := time.Now()
		err := fn()
		if f.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond // it ran well for a while
		}
		f.logger.Warn(msg, "err", err, "in", backoff)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// loadCRLs reads every CRL, applies them and returns the revision read.
func (f *Fleet) loadCRLs(apply func([]*x509.RevocationList)) (int64, error) {
	ctx, cancel := f.opContext()
	defer cancel()
	resp, err := f.cli.Get(ctx, f.crlPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	var crls []*x509.RevocationList
	for _, kv := range resp.Kvs {
		crl, err := x509.ParseRevocationList(kv.Value)
		if err != nil {
			f.logger.Error("fleet CRL does not parse; ignored", "key", string(kv.Key), "err", err)
			continue
		}
		crls = append(crls, crl)
	}
	apply(crls)
	return resp.Header.Revision, nil
}

// watchCRLs waits for changes after rev and applies the whole set again
// after each batch; it returns when the watch ends.
func (f *Fleet) watchCRLs(rev int64, apply func([]*x509.RevocationList)) error {
	wch := f.cli.Watch(clientv3.WithRequireLeader(f.ctx), f.crlPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		if _, err := f.loadCRLs(apply); err != nil {
			return err
		}
	}
	return errors.New("watch closed")
}

// Publish connects to the fleet's etcd as cfg says, publishes crl
// (PublishCRL) and disconnects: `twoway fleet publish-crl`, which needs no
// lease of its own.
func Publish(ctx context.Context, cfg Config, crl *x509.RevocationList) error {
	return oneOff(ctx, cfg, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		return PublishCRL(ctx, cli, prefix, crl)
	})
}
