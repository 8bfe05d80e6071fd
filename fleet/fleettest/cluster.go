// Package fleettest starts real etcd clusters in process for tests of
// twoway's fleet: real raft, transactions, leases and watches, on
// loopback ports. It imports etcd's server, so only tests may import it.
package fleettest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is an etcd cluster of embedded members on loopback, for tests:
// real etcd, real raft, real transactions and leases, in this process.
type Cluster struct {
	members []*embed.Etcd
	cfgs    []*embed.Config
	// Endpoints are the members' client URLs.
	Endpoints []string
	ports     []int  // every port the members listen on
	host      string // the address they listen on
}

// freePorts returns n TCP ports of host that were free a moment ago.
func freePorts(host string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartCluster starts n members under dir and waits until they serve.
// With clientTLS set, clients must speak TLS to them (peers stay plain).
func StartCluster(dir string, n int, clientTLS *transport.TLSInfo) (*Cluster, error) {
	return StartClusterAt("127.0.0.1", dir, n, clientTLS)
}

// StartClusterAt is StartCluster on the IPv4 address host instead of
// loopback: for tests whose gateways run in network namespaces, which
// reach etcd on an address of a namespace's interface.
func StartClusterAt(host, dir string, n int, clientTLS *transport.TLSInfo) (*Cluster, error) {
	ports, err := freePorts(host, 2*n)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if clientTLS != nil {
		scheme = "https"
	}
	c := &Cluster{ports: ports, host: host}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://%s:%d", i, host, ports[2*i+1]))
	}
	cfgs := make([]*embed.Config, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		client := url.URL{Scheme: scheme, Host: fmt.Sprintf("%s:%d", host, ports[2*i])}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("%s:%d", host, ports[2*i+1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "twoway-test"
		// etcd's defaults: heartbeats light enough for a loaded 2-core
		// machine under -race, and a lease TTL floor of 2 s (1.5
		// election timeouts, rounded up) for the expiry test.
		cfg.TickMs, cfg.ElectionMs = 100, 1000
		cfg.UnsafeNoFsync = true // a test cluster's data need not survive a crash
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		if clientTLS != nil {
			cfg.ClientTLSInfo = *clientTLS
		}
		cfgs[i] = cfg
		c.Endpoints = append(c.Endpoints, client.String())
	}
	// Members of a new cluster wait for each other, so they start
	// together.
	type started struct {
		i   int
		e   *embed.Etcd
		err error
	}
	ch := make(chan started, n)
	for i, cfg := range cfgs {
		go func() {
			e, err := embed.StartEtcd(cfg)
			ch <- started{i, e, err}
		}()
	}
	c.cfgs = cfgs
	c.members = make([]*embed.Etcd, n)
	var errs []error
	for range n {
		s := <-ch
		c.members[s.i] = s.e
		if s.err != nil {
			errs = append(errs, fmt.Errorf("member %d: %w", s.i, s.err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	timeout := time.After(30 * time.Second)
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.Close()
			return nil, fmt.Errorf("member %d: %w", i, err)
		case <-timeout:
			c.Close()
			return nil, errors.New("etcd members not ready within 30 s")
		}
	}
	return c, nil
}

// Close stops every member.
func (c *Cluster) Close() {
	for _, e := range c.members {
		if e != nil {
			e.Close()
		}
	}
}

// StopMember stops member i, as if its machine went away: its clients
// lose their connections. RestartMember brings it back.
func (c *Cluster) StopMember(i int) {
	if c.members[i] != nil {
		c.members[i].Close()
		c.members[i] = nil
	}
}

// RestartMember starts the stopped member i again from its data, on the
// same ports, and waits until it serves, which takes a quorum.
func (c *Cluster) RestartMember(i int) error {
	if c.members[i] != nil {
		return fmt.Errorf("member %d is running", i)
	}
	e, err := embed.StartEtcd(c.cfgs[i])
	if err != nil {
		return fmt.Errorf("member %d: %w", i, err)
	}
	c.members[i] = e
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %d: %w", i, err)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("member %d not ready within 30 s", i)
	}
}

// PortsFree reports a port of the cluster that is still in use after
// Close.
func (c *Cluster) PortsFree() error {
	for _, p := range c.ports {
		l, err := net.Listen("tcp", net.JoinHostPort(c.host, fmt.Sprint(p)))
		if err != nil {
			return fmt.Errorf("port %d still in use after the cluster closed: %w", p, err)
		}
		l.Close()
	}
	return nil
}

// CommittedIndex returns the highest raft index committed on a running
// member: every write request (a put, a delete, a transaction, whether or
// not its comparisons hold), every lease grant and revocation, and a
// leader's first entry after an election take one index. Linearizable
// reads and lease renewals take none. Benchmarks count etcd's write load
// with it; etcd's etcd_server_proposals_committed_total says the same, but
// members in one process share that gauge, so it reads as whichever member
// set it last.
func (c *Cluster) CommittedIndex() uint64 {
	var idx uint64
	for _, e := range c.members {
		if e != nil {
			idx = max(idx, e.Server.CommittedIndex())
		}
	}
	return idx
}
