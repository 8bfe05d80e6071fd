// Package lan connects the gateway's VPN to its LAN: it turns on IP
// forwarding and, in NAT mode, masquerades the client pools to the
// gateway's own LAN address; unless told otherwise it keeps the LAN from
// opening connections to the clients; and it undoes all of it on shutdown.
//
// On Linux forwarding is the net.ipv4.ip_forward and
// net.ipv6.conf.all.forwarding sysctls, and the rest is one nftables table
// ("inet twoway", set up over netlink with github.com/google/nftables): a
// postrouting masquerade rule per pool (NAT) and a forward-hook filter
// that drops new connections toward the TUN device. Owning a whole table keeps the
// rules apart from whatever else manages the host's firewall, and lets a
// restart after a crash clean up by deleting it. Elsewhere Apply returns
// ErrUnsupported.
//
// In a routed fleet, Neighbours makes the LAN find the gateway that holds
// a client's address now: proxy ARP/NDP entries for the addresses of the
// sessions it holds, and a gratuitous ARP / unsolicited neighbour
// advertisement at each takeover.
package lan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// Mode is how client traffic reaches the LAN.
type Mode string

// Modes.
const (
	// NAT masquerades the pools to the gateway's LAN address: the LAN
	// needs no route back to the clients.
	NAT Mode = "nat"
	// Routed forwards with the clients' own addresses: the LAN routes the
	// pools to the gateway.
	Routed Mode = "routed"
)

// TableName is the nftables table (family inet) twoway owns in NAT mode.
const TableName = "twoway"

// Config says what to set up.
type Config struct {
	Mode Mode
	// Pools are the client address pools, at most one per family.
	Pools []netip.Prefix
	// TUN is the gateway's TUN device: traffic leaving through it is
	// never masqueraded.
	TUN string
	// Interface, if set, restricts masquerading to traffic leaving
	// through this LAN interface.
	Interface string
	// LANToClients lets hosts on the LAN open connections to clients.
	// By default a forward-hook rule drops every new connection routed
	// out through the TUN device that did not come in through it, in
	// both modes: masquerading is not inbound filtering, and a LAN host
	// that routes the pools to the gateway would otherwise reach every
	// laptop. Replies to connections the clients opened still pass.
	LANToClients bool
}

// Sentinel errors.
var (
	// ErrUnsupported is returned by Apply on operating systems where
	// twoway does not set up forwarding itself.
	ErrUnsupported = errors.New("lan: forwarding and NAT setup is only implemented on Linux")
	// ErrInvalidConfig wraps Config errors.
	ErrInvalidConfig = errors.New("invalid lan config")
)

// Validate checks cfg without touching the system.
func (c Config) Validate() error {
	switch c.Mode {
	case NAT, Routed:
	default:
		return fmt.Errorf("%w: mode %q", ErrInvalidConfig, c.Mode)
	}
	if len(c.Pools) == 0 {
		return fmt.Errorf("%w: no pools", ErrInvalidConfig)
	}
	seen := map[bool]bool{}
	for _, p := range c.Pools {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("%w: pool %v is not a network prefix", ErrInvalidConfig, p)
		}
		if seen[p.Addr().Is4()] {
			return fmt.Errorf("%w: more than one pool of a family", ErrInvalidConfig)
		}
		seen[p.Addr().Is4()] = true
	}
	if c.TUN == "" || len(c.TUN) > 15 || len(c.Interface) > 15 {
		return fmt.Errorf("%w: interface names must be 1-15 bytes", ErrInvalidConfig)
	}
	return nil
}

// Apply sets up forwarding (and NAT) for cfg and returns undo, which
// restores the previous sysctl values and removes the nftables table; undo
// is idempotent. A table left behind by a crashed run is replaced (NAT) or
// removed (routed). On error nothing stays applied.
func Apply(cfg Config, logger *slog.Logger) (undo func() error, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return apply(cfg, logger)
}

// Cleanup removes what a crashed run left behind (the nftables table). The
// sysctls are left as they are: their previous values died with the run.
func Cleanup() error { return cleanup() }
