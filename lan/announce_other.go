//go:build !linux

package lan

import (
	"log/slog"
	"net/netip"
)

// neighSys has no implementation here: Start returns ErrUnsupported.
type neighSys struct{}

func startNeighSys(string, []netip.Prefix, *slog.Logger) (*neighSys, error) {
	return nil, ErrUnsupported
}

func (*neighSys) covers(netip.Addr) bool { return false }
func (*neighSys) add(netip.Addr) error   { return ErrUnsupported }
func (*neighSys) del(netip.Addr) error   { return nil }
func (*neighSys) announce(netip.Addr)    {}
func (*neighSys) close() error           { return nil }
