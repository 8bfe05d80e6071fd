package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/lan"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tunnel"
)

// gatewayVPN is the OS side of VPN mode at the gateway: the TUN device
// with the gateway's pool addresses, and forwarding or NAT onto the LAN.
type gatewayVPN struct {
	log     *slog.Logger
	undoTun func() error
	undoLAN func() error
	// neigh answers ARP/NDP on the LAN for the clients' addresses
	// (lan_announce = "proxy-arp"); nil otherwise.
	neigh *lan.Neighbours
}

// openGatewayVPN sets up everything VPN mode needs at the gateway and
// returns the tunnel's part of it. On error nothing stays set up.
//
// leases, if set, keeps the address assignments (a fleet's shared store)
// instead of the state file.
func openGatewayVPN(v *config.ServerVPN, leases ipam.Store, logger *slog.Logger) (_ *tunnel.ServerVPN, _ *gatewayVPN, err error) {
	if err := os.MkdirAll(v.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("vpn: state directory: %w", err)
	}
	var pool *ipam.Pool
	if leases != nil {
		pool, err = ipam.NewWithStore(v.Pool(), leases, logger.With("component", "ipam"))
	} else {
		pool, err = ipam.New(v.Pool(), logger.With("component", "ipam"))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("vpn: %w", err)
	}
	dev, err := tun.OpenWith(v.TUN, v.MTU, tun.Options{DisableOffload: !v.OffloadOn()})
	if err != nil {
		return nil, nil, fmt.Errorf("vpn: open TUN device: %w", err)
	}
	gv := &gatewayVPN{log: logger}
	defer func() {
		if err != nil {
			gv.close()
			_ = dev.Close()
		}
	}()
	name, err := dev.Name()
	if err != nil {
		return nil, nil, fmt.Errorf("vpn: %w", err)
	}
	conf, err := tun.NewConfigurator(tun.ConfiguratorOptions{
		StateFile: filepath.Join(v.StateDir, "tun-"+name+".json"), Logger: logger,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("vpn: %w", err)
	}
	if gv.undoTun, err = conf.Apply(context.Background(), name, tun.Config{Addresses: pool.Gateway(), MTU: v.MTU}); err != nil {
		return nil, nil, fmt.Errorf("vpn: %w", err)
	}
	var pools []netip.Prefix
	for _, p := range []netip.Prefix{v.IPv4, v.IPv6} {
		if p.IsValid() {
			pools = append(pools, p)
		}
	}
	gv.undoLAN, err = lan.Apply(lan.Config{Mode: lan.Mode(v.Forwarding), Pools: pools, TUN: name, Interface: v.LANInterface, LANToClients: v.LANToClients}, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("vpn: %w", err)
	}
	if v.LANAnnounce == config.LANAnnounceProxyARP {
		if gv.neigh, err = lan.NewNeighbours(v.LANInterface, pools, logger.With("component", "lan")); err != nil {
			return nil, nil, fmt.Errorf("vpn: lan_announce: %w", err)
		}
		if err = gv.neigh.Start(); err != nil {
			gv.neigh = nil
			return nil, nil, fmt.Errorf("vpn: lan_announce: %w", err)
		}
		logger.Info("answering ARP/NDP on the LAN for the addresses of this gateway's clients", "interface", v.LANInterface)
	}
	logger.Info("VPN mode on", "tun", name, "addresses", pool.Gateway(), "forwarding", v.Forwarding, "client_to_client", v.ClientToClient)
	sv := &tunnel.ServerVPN{
		Device: dev, Pool: pool, Routes: v.Routes, DNS: v.DNS, SearchDomains: v.SearchDomains,
		MTU: v.MTU, ClientToClient: v.ClientToClient,
	}
	if v.UDPOn() {
		sv.UDP = &tunnel.ServerUDP{Port: v.UDPPort, LocalQueueOnly: !v.PathQueueManaged()}
	}
	return sv, gv, nil
}

// close undoes the LAN setup and the device configuration (the device
// itself is closed by the tunnel, or by the caller on a failed start).
func (gv *gatewayVPN) close() {
	if gv == nil {
		return
	}
	var errs []error
	if gv.neigh != nil {
		errs = append(errs, gv.neigh.Stop())
	}
	if gv.undoLAN != nil {
		errs = append(errs, gv.undoLAN())
	}
	if gv.undoTun != nil {
		errs = append(errs, gv.undoTun())
	}
	if err := errors.Join(errs...); err != nil {
		gv.log.Warn("undoing VPN setup", "err", err)
	}
}

// announceSessions makes the LAN find this gateway for the addresses of
// the sessions it holds (lan_announce): from when a session starts until
// it ends. A client failing over from a dead gateway starts a session
// here, so the announcement points the LAN's neighbour caches at this
// gateway at once.
func (gv *gatewayVPN) announceSessions(tc *tunnel.ServerConfig) {
	if gv == nil || gv.neigh == nil {
		return
	}
	onSession, onEnd := tc.OnSession, tc.OnSessionEnd
	tc.OnSession = func(si tunnel.SessionInfo) {
		if onSession != nil {
			onSession(si)
		}
		gv.neigh.Add(vpnAddrs(si))
	}
	tc.OnSessionEnd = func(si tunnel.SessionInfo, err error) {
		if onEnd != nil {
			onEnd(si, err)
		}
		gv.neigh.Remove(vpnAddrs(si))
	}
}

// vpnAddrs are a session's VPN addresses, if it has any.
func vpnAddrs(si tunnel.SessionInfo) []netip.Addr {
	if si.VPN == nil {
		return nil
	}
	out := make([]netip.Addr, len(si.VPN.Addresses))
	for i, p := range si.VPN.Addresses {
		out[i] = p.Addr()
	}
	return out
}

// openClientVPN opens the client's TUN device and its configurator, after
// undoing whatever a crashed earlier run left configured.
func openClientVPN(v *config.ClientVPN, hooks ClientHooks, logger *slog.Logger) (*tunnel.ClientVPN, error) {
	if err := os.MkdirAll(v.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("vpn: state directory: %w", err)
	}
	name := v.TUN
	if name == "" {
		name = tun.DefaultName()
	}
	opts := tun.ConfiguratorOptions{
		StateFile: filepath.Join(v.StateDir, "tun-"+name+".json"), ResolvConf: v.ResolvConf, Logger: logger,
	}
	if v.ResolvConf != "" {
		// An explicit file means that file, even where systemd-resolved
		// runs (tests, and hosts where resolv.conf is managed by hand).
		opts.Resolved = func() bool { return false }
	}
	conf, err := tun.NewConfigurator(opts)
	if err != nil {
		return nil, fmt.Errorf("vpn: %w", err)
	}
	if err := conf.Cleanup(context.Background()); err != nil {
		return nil, fmt.Errorf("vpn: clean up after a previous run: %w", err)
	}
	dev, err := tun.OpenWith(name, tun.DefaultMTU, tun.Options{DisableOffload: !v.OffloadOn()})
	if err != nil {
		return nil, fmt.Errorf("vpn: open TUN device: %w", err)
	}
	return &tunnel.ClientVPN{
		Device: dev, Configurator: conf, OnUp: hooks.OnVPNUp, OnDown: hooks.OnVPNDown, Persist: v.Persist,
		TCPOnly: v.Transport == config.TransportTCP, LocalQueueOnly: !v.PathQueueManaged(),
	}, nil
}
