package lan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Forwarding sysctls, per family, and the per-interface settings
// directories.
const (
	sysctlForward4 = "/proc/sys/net/ipv4/ip_forward"
	sysctlForward6 = "/proc/sys/net/ipv6/conf/all/forwarding"
	sysctlConf4    = "/proc/sys/net/ipv4/conf"
	sysctlConf6    = "/proc/sys/net/ipv6/conf"
)

// forwardingSideEffects lists the settings the kernel rewrites whenever a
// family's global forwarding switch flips (inet_forward_change,
// addrconf_fixup_forwarding): the default's and every interface's forwarding
// flag, and for IPv4 conf/all/accept_redirects, which it sets to the
// opposite of forwarding. Writing the old switch value back alone would
// leave them as the kernel chose: per-interface forwarding lost, and
// accept_redirects turned on on a host hardened with it off.
func forwardingSideEffects(conf string) []string {
	paths, _ := filepath.Glob(filepath.Join(conf, "*", "forwarding")) // the pattern is valid
	paths = slices.DeleteFunc(paths, func(p string) bool { return filepath.Base(filepath.Dir(p)) == "all" })
	if conf == sysctlConf4 {
		paths = append(paths, filepath.Join(conf, "all", "accept_redirects"))
	}
	return paths
}

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
		path, conf := sysctlForward6, sysctlConf6
		if p.Addr().Is4() {
			path, conf = sysctlForward4, sysctlConf4
		} else {
			warnRADefaults(logger)
		}
		restore, err := setSysctl(path, "1", forwardingSideEffects(conf))
		if err != nil {
			return nil, errors.Join(err, undoAll())
		}
		logger.Info("IP forwarding on", "sysctl", path)
		undos = append(undos, restore)
	}
	if cfg.Mode == NAT || !cfg.LANToClients {
		if err := addTable(cfg); err != nil {
			if !cfg.LANToClients {
				err = fmt.Errorf("%w (set lan_to_clients = true to run without the filter that keeps the LAN from opening connections to clients)", err)
			}
			return nil, errors.Join(err, undoAll())
		}
		if cfg.Mode == NAT {
			logger.Info("masquerading client pools", "table", "inet "+TableName, "pools", cfg.Pools, "out", cmp(cfg.Interface, "any but "+cfg.TUN))
		}
		if !cfg.LANToClients {
			logger.Info("dropping connections the LAN opens toward clients", "table", "inet "+TableName, "tun", cfg.TUN)
		}
		undos = append(undos, cleanup)
	} else if err := cleanup(); err != nil {
		// Routed mode with lan_to_clients needs no nftables, so a host
		// without them must still work; but a table a crashed run left
		// would masquerade or filter all through this run.
		logger.Warn("could not remove a stale nftables table", "table", "inet "+TableName, "err", err)
	}
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = undoAll() })
		return err
	}, nil
}

// warnRADefaults warns about every interface whose IPv6 default route came
// from a router advertisement and which takes them only while not
// forwarding (accept_ra=1): with forwarding on the kernel ignores further
// advertisements there, so that route expires during the run and the
// gateway loses IPv6 connectivity. accept_ra=2 is the fix, and the
// operator's call.
func warnRADefaults(logger *slog.Logger) {
	if strings.TrimSpace(readOr(sysctlForward6, "0")) != "0" {
		return // forwarding is on already: nothing changes
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: unix.RTPROT_RA}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return
	}
	warned := map[int]bool{}
	for _, r := range routes {
		if !isDefault(r) || warned[r.LinkIndex] {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		name := link.Attrs().Name
		if strings.TrimSpace(readOr(filepath.Join(sysctlConf6, name, "accept_ra"), "")) != "1" {
			continue
		}
		warned[r.LinkIndex] = true
		logger.Warn("IPv6 forwarding makes this interface ignore router advertisements, and its default route came from one: it will expire; set accept_ra=2 to keep taking them",
			"interface", name, "sysctl", "net.ipv6.conf."+name+".accept_ra")
	}
}

// isDefault reports whether r is a default route (netlink reports one with
// no destination or with ::/0, depending on the version).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// readOr is the content of path, or def when it cannot be read.
func readOr(path, def string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	return string(b)
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// setSysctl writes value and returns how to restore the old one and, after
// it, the old values of the sysctls in related, which the kernel rewrites
// when path changes. A related sysctl that is gone by then (its interface
// was removed) is skipped.
func setSysctl(path, value string, related []string) (func() error, error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lan: read %s: %w", path, err)
	}
	if strings.TrimSpace(string(old)) == value {
		return func() error { return nil }, nil
	}
	type saved struct {
		path string
		old  []byte
	}
	var before []saved
	for _, p := range related {
		if v, err := os.ReadFile(p); err == nil {
			before = append(before, saved{p, v})
		}
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return nil, fmt.Errorf("lan: write %s: %w", path, err)
	}
	return func() error {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			return fmt.Errorf("lan: restore %s: %w", path, err)
		}
		var errs []error
		for _, s := range before {
			cur, err := os.ReadFile(s.path)
			if errors.Is(err, fs.ErrNotExist) || err == nil && bytes.Equal(cur, s.old) {
				continue
			}
			if err == nil {
				err = os.WriteFile(s.path, s.old, 0o644)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("lan: restore %s: %w", s.path, err))
			}
		}
		return errors.Join(errs...)
	}, nil
}

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// addTable replaces the twoway table with one masquerading every pool (NAT
// mode) and dropping new connections toward the clients (unless
// LANToClients).
func addTable(cfg Config) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("lan: nftables: %w", err)
	}
	defer c.CloseLasting()
	if err := deleteTable(c); err != nil {
		return err
	}
	t := c.AddTable(table)
	if cfg.Mode == NAT {
		ch := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		for _, p := range cfg.Pools {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqRule(p, cfg.TUN, cfg.Interface)})
		}
	}
	if !cfg.LANToClients {
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{
			Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		for _, r := range clientGuardRules(cfg.TUN) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
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

// clientGuardRules are, in order:
//
//	oifname TUN ct state established,related accept
//	oifname TUN iifname != TUN counter drop
//
// so that what goes out to the clients is either a reply to a connection
// they opened or nothing. Traffic between clients never takes this path
// (the router forwards it, or drops it under client_to_client = false).
func clientGuardRules(tun string) [][]expr.Any {
	toTUN := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(tun)},
	}
	var est [4]byte
	binary.NativeEndian.PutUint32(est[:], expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	accept := append(append([]expr.Any{}, toTUN...),
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: est[:], Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
	drop := append(append([]expr.Any{}, toTUN...),
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(tun)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return [][]expr.Any{accept, drop}
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
