package tunnel

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sourceLimiter is a token bucket per source (see sourceKey) of failed
// handshakes. A handshake costs the gateway a signature and a chain
// verification; one address must not be able to spend all its CPU on
// handshakes that lead nowhere. Successful handshakes are not charged
// (see handshakeGate).
// Addresses are tracked in a bounded map: when it is full, entries idle
// long enough to have refilled their bucket are dropped (they would be
// recreated full anyway), and if that frees nothing the newcomer shares a
// single overflow bucket rather than growing the map.
type sourceLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket // guarded by mu
	overflow *rate.Limiter
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newSourceLimiter(perSecond float64, burst, maxTracked int) *sourceLimiter {
	if perSecond <= 0 {
		return nil // unlimited
	}
	return &sourceLimiter{
		limit:    rate.Limit(perSecond),
		burst:    burst,
		max:      maxTracked,
		buckets:  make(map[netip.Addr]*bucket),
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

// hasBudget reports whether src may still fail a handshake.
func (l *sourceLimiter) hasBudget(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		return len(l.buckets) < l.max || l.overflow.TokensAt(now) >= 1
	}
	return b.lim.TokensAt(now) >= 1
}

// charge takes a token from src's bucket for a failed handshake.
func (l *sourceLimiter) charge(src netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.prune(now)
		}
		if len(l.buckets) >= l.max {
			l.overflow.AllowN(now, 1)
			return
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[src] = b
	}
	b.seen = now
	b.lim.AllowN(now, 1)
}

// prune drops buckets idle long enough to be full again. Called with mu.
func (l *sourceLimiter) prune(now time.Time) {
	refill := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.seen) > refill {
			delete(l.buckets, ip)
		}
	}
}

// addrIP is the source IP of a connection (zero for non-IP addresses, which
// then share one bucket).
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(addrString(a)); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
