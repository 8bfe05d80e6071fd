package lan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Forwarding sysctls, per family.
const (
	sysctlForward4 = "/proc/sys/net/ipv4/ip_forward"
	sysctlForward6 = "/proc/sys/net/ipv6/conf/all/forwarding"
)

func apply(cfg Config, logger *slog.Logger) (func() error, error) {
	var undos []func() error
	undoAll := func() error {
		var errs []error
		for i := len(undos) - 1; i >= 0; i-- {
			errs = append(errs, undos[i]())
		}
		return errors.Join(errs...)
	}
	for _, p := range cfg.Pools {
		path := sysctlForward6
		if p.Addr().Is4() {
			path = sysctlForward4
		}
		restore, err := setSysctl(path, "1")
		if err != nil {
			return nil, errors.Join(err, undoAll())
		}
		logger.Info("IP forwarding on", "sysctl", path)
		undos = append(undos, restore)
	}
	if cfg.Mode == NAT {
		if err := addNAT(cfg); err != nil {
			return nil, errors.Join(err, undoAll())
		}
		logger.Info("masquerading client pools", "table", "inet "+TableName, "pools", cfg.Pools, "out", cmp(cfg.Interface, "any but "+cfg.TUN))
		undos = append(undos, cleanup)
	}
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = undoAll() })
		return err
	}, nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// setSysctl writes value and returns how to restore the old one.
func setSysctl(path, value string) (func() error, error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lan: read %s: %w", path, err)
	}
	if strings.TrimSpace(string(old)) == value {
		return func() error { return nil }, nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return nil, fmt.Errorf("lan: write %s: %w", path, err)
	}
	return func() error {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			return fmt.Errorf("lan: restore %s: %w", path, err)
		}
		return nil
	}, nil
}

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// addNAT replaces the twoway table with one masquerading every pool.
func addNAT(cfg Config) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lan: nftables: %w", err)
	}
	defer c.CloseLasting()
	if err := deleteTable(c); err != nil {
		return err
	}
	t := c.AddTable(table)
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	for _, p := range cfg.Pools {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqRule(p, cfg.TUN, cfg.Interface)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("lan: add nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// masqRule is "meta nfproto ipvX; ip(6) saddr POOL; oifname != TUN (or
// == LAN); masquerade".
func masqRule(pool netip.Prefix, tun, lan string) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if pool.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 8
	}
	addr := pool.Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i := range pool.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	n := uint32(len(addr))
	ifOp, ifName := expr.CmpOpNeq, tun
	if lan != "" {
		ifOp, ifName = expr.CmpOpEq, lan
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: ifOp, Register: 1, Data: ifname(ifName)},
		&expr.Masq{},
	}
}

// ifname pads an interface name to IFNAMSIZ, as the kernel compares it.
func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// deleteTable removes the twoway table if it exists.
func deleteTable(c *nftables.Conn) error {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("lan: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			c.DelTable(table)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("lan: delete nftables table inet %s: %w", TableName, err)
			}
		}
	}
	return nil
}

func cleanup() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lan: nftables: %w", err)
	}
	defer c.CloseLasting()
	return deleteTable(c)
}
