package lan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Announce is how, in routed mode, the LAN learns which gateway of a fleet
// holds a client's address now.
type Announce string

// Announce choices.
const (
	// AnnounceNone leaves it to the LAN: route the pools to the gateways
	// (one gateway; or host routes from a routing daemon).
	AnnounceNone Announce = "none"
	// AnnounceProxyARP makes the gateway holding an address answer ARP
	// (IPv4) and neighbour solicitations (IPv6) for it on its LAN
	// interface, for pools inside that interface's subnets, and announce
	// each takeover with a gratuitous ARP / unsolicited neighbour
	// advertisement.
	AnnounceProxyARP Announce = "proxy-arp"
)

// ErrNoLANSubnet is returned by Neighbours.Start when no pool lies inside a
// subnet of the LAN interface: LAN hosts would not ask for the clients'
// addresses there, so there is nothing to answer.
var ErrNoLANSubnet = errors.New("no client pool lies inside a subnet of the LAN interface")

// announceRepeat is when a takeover is announced again after the first
// announcement: a single gratuitous ARP lost on a busy LAN would leave
// hosts on the dead gateway's MAC until their entry goes stale.
var announceRepeat = []time.Duration{100 * time.Millisecond, time.Second}

// Neighbours answers ARP and NDP on the LAN interface for the addresses of
// the clients whose sessions this gateway holds, one proxy neighbour entry
// per address (ip neigh add proxy ADDR dev IF), and announces each one it
// takes over. Only the gateway holding a session answers for its
// addresses: the entry is added when the session starts and removed when
// it ends, and a gateway that died has lost its TUN device, so its kernel
// no longer proxies for it (the route to the address no longer leads
// elsewhere).
//
// Add and Remove are safe for concurrent use and count references: two
// sessions of one identity share its addresses, and the entry stays until
// the last ends.
type Neighbours struct {
	iface  string
	pools  []netip.Prefix
	logger *slog.Logger

	wg   sync.WaitGroup // owns the repeat announcements
	stop chan struct{}  // closed by Stop

	mu      sync.Mutex // guards the fields below
	sys     *neighSys  // nil until Start and after Stop
	refs    map[netip.Addr]int
	stopped bool
}

// NewNeighbours checks its arguments and returns Neighbours for the LAN
// interface iface and the client pools; nothing is touched until Start.
func NewNeighbours(iface string, pools []netip.Prefix, logger *slog.Logger) (*Neighbours, error) {
	if iface == "" || len(iface) > 15 {
		return nil, fmt.Errorf("%w: LAN interface name must be 1-15 bytes", ErrInvalidConfig)
	}
	if len(pools) == 0 {
		return nil, fmt.Errorf("%w: no pools", ErrInvalidConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Neighbours{iface: iface, pools: pools, logger: logger, stop: make(chan struct{}), refs: make(map[netip.Addr]int)}, nil
}

// Start checks that the interface exists and that pools lie inside its
// subnets (pools that do not are skipped with a warning; none is
// ErrNoLANSubnet), removes proxy entries for the pools a crashed run left,
// and makes the kernel answer proxied requests at once (proxy_delay 0;
// proxy_ndp 1 for IPv6). Stop undoes it.
func (n *Neighbours) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped || n.sys != nil {
		return errors.New("lan: neighbours started twice")
	}
	sys, err := startNeighSys(n.iface, n.pools, n.logger)
	if err != nil {
		return err
	}
	n.sys = sys
	return nil
}

// Add answers for addrs from now on and announces them to the LAN. Errors
// are logged: a session is not refused for them.
func (n *Neighbours) Add(addrs []netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sys == nil {
		return
	}
	for _, a := range addrs {
		if !n.sys.covers(a) {
			continue
		}
		n.refs[a]++
		if n.refs[a] > 1 {
			continue
		}
		if err := n.sys.add(a); err != nil {
			n.logger.Error("cannot answer for a client's address on the LAN", "address", a, "interface", n.iface, "err", err)
			continue
		}
		n.sys.announce(a)
		n.logger.Info("answering for a client's address on the LAN", "address", a, "interface", n.iface)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.repeat(a)
		}()
	}
}

// repeat announces a again at announceRepeat, while this gateway still
// answers for it.
func (n *Neighbours) repeat(a netip.Addr) {
	start := time.Now()
	for _, d := range announceRepeat {
		t := time.NewTimer(time.Until(start.Add(d)))
		select {
		case <-n.stop:
			t.Stop()
			return
		case <-t.C:
		}
		n.mu.Lock()
		if n.sys != nil && n.refs[a] > 0 {
			n.sys.announce(a)
		}
		n.mu.Unlock()
	}
}

// Remove stops answering for addrs whose last session ended.
func (n *Neighbours) Remove(addrs []netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sys == nil {
		return
	}
	for _, a := range addrs {
		if n.refs[a] == 0 {
			continue
		}
		n.refs[a]--
		if n.refs[a] > 0 {
			continue
		}
		delete(n.refs, a)
		if err := n.sys.del(a); err != nil {
			n.logger.Warn("cannot stop answering for a client's address on the LAN", "address", a, "interface", n.iface, "err", err)
			continue
		}
		n.logger.Info("no longer answering for a client's address on the LAN", "address", a, "interface", n.iface)
	}
}

// Stop removes every entry and restores the sysctls; it is idempotent.
func (n *Neighbours) Stop() error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	close(n.stop)
	sys := n.sys
	n.sys = nil
	var errs []error
	if sys != nil {
		for a := range n.refs {
			errs = append(errs, sys.del(a))
		}
		clear(n.refs)
	}
	n.mu.Unlock()
	n.wg.Wait()
	if sys != nil {
		errs = append(errs, sys.close())
	}
	return errors.Join(errs...)
}
