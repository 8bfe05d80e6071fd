package fleet

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fleet's policy. `twoway fleet publish-policy` puts a gateway
// configuration's [policy] (as JSON) under <prefix>policy; every gateway
// watches it and, while it exists, uses it instead of its own file's,
// re-checking live sessions at each change, so one change reaches the
// whole fleet. Removing it (publish-policy --remove) puts every gateway
// back on its own file. Unlike a CRL, a policy is not signed: whoever can
// write to the fleet's etcd prefix can change who gets in, so etcd's
// access control must be as tight as the gateways' configuration files.

// maxPolicyBytes bounds a published policy, well under etcd's limit.
const maxPolicyBytes = 512 << 10

func policyKey(prefix string) string { return prefix + "policy" }

// PublishPolicy puts doc (a JSON policy) in the fleet's store; a nil doc
// removes the fleet's policy.
func PublishPolicy(ctx context.Context, cli *clientv3.Client, prefix string, doc []byte) error {
	if doc == nil {
		if _, err := cli.Delete(ctx, policyKey(prefix)); err != nil {
			return fmt.Errorf("remove the fleet's policy: %w", err)
		}
		return nil
	}
	if len(doc) > maxPolicyBytes {
		return fmt.Errorf("the policy is %d bytes; the fleet takes at most %d", len(doc), maxPolicyBytes)
	}
	if _, err := cli.Put(ctx, policyKey(prefix), string(doc)); err != nil {
		return fmt.Errorf("publish the policy: %w", err)
	}
	return nil
}

// WatchPolicy calls apply with the fleet's policy document, at once and
// after every change, until Stop; nil means the fleet has none. apply runs
// on one goroutine, never two at once. Call it after Start.
func (f *Fleet) WatchPolicy(apply func(doc []byte)) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.retry("fleet policy watch interrupted; reading it again", func() error {
			ctx, cancel := f.opContext()
			resp, err := f.cli.Get(ctx, policyKey(f.cfg.Prefix))
			cancel()
			if err != nil {
				return err
			}
			var doc []byte
			if len(resp.Kvs) > 0 {
				doc = resp.Kvs[0].Value
			}
			apply(doc)
			wch := f.cli.Watch(clientv3.WithRequireLeader(f.ctx), policyKey(f.cfg.Prefix), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					return err
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						apply(nil)
					} else {
						apply(ev.Kv.Value)
					}
				}
			}
			return fmt.Errorf("watch closed")
		})
	}()
}

// PublishPolicyWith connects as cfg says, publishes doc (PublishPolicy) and
// disconnects.
func PublishPolicyWith(ctx context.Context, cfg Config, doc []byte) error {
	return oneOff(ctx, cfg, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		return PublishPolicy(ctx, cli, prefix, doc)
	})
}
