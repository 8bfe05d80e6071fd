package tunnel

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// localAddrs caches the gateway's own addresses. Interfaces come and go
// (a VPN device, DHCP), so the list is read again when it is older than
// localAddrsTTL; listing costs a netlink dump, too much for every dial.
type localAddrs struct {
	list func() ([]netip.Addr, error)

	mu   sync.Mutex
	at   time.Time               // guarded by mu
	addr map[netip.Addr]struct{} // guarded by mu
}

const localAddrsTTL = 2 * time.Second

// contains reports whether a is one of the gateway's addresses. If they
// cannot be listed, the last known list stands.
func (l *localAddrs) contains(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.addr == nil || now.Sub(l.at) > localAddrsTTL {
		if list, err := l.list(); err == nil || l.addr == nil {
			m := make(map[netip.Addr]struct{}, len(list))
			for _, x := range list {
				m[x.WithZone("").Unmap()] = struct{}{}
			}
			l.addr, l.at = m, now
		}
	}
	_, ok := l.addr[a]
	return ok
}

// interfaceAddrs lists the addresses of every local interface.
func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}
