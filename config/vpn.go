package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/tun"
)

// Forwarding modes of the gateway's [vpn] table.
const (
	// ForwardingNAT masquerades client traffic to the gateway's own LAN
	// address: the LAN needs no route back to the client pools.
	ForwardingNAT = "nat"
	// ForwardingRouted forwards client traffic with the clients' own
	// addresses: the LAN routes the pools to the gateway.
	ForwardingRouted = "routed"
)

// LAN announcement choices of the gateway's [vpn] table (lan_announce):
// how, in routed mode, the LAN finds the gateway holding a client's address.
const (
	// LANAnnounceNone leaves it to the LAN's routing (default).
	LANAnnounceNone = "none"
	// LANAnnounceProxyARP: the holding gateway answers ARP/NDP for the
	// address on lan_interface and announces takeovers.
	LANAnnounceProxyARP = "proxy-arp"
)

// DefaultStateDir is where leases and the TUN configuration records live
// unless state_dir says otherwise.
const DefaultStateDir = "/var/lib/twoway"

// ServerVPN is the [vpn] table of server.toml: VPN mode at the gateway.
type ServerVPN struct {
	// Enable turns VPN mode on.
	Enable bool `toml:"enable"`
	// IPv4 and IPv6 are the client address pools (at least one), e.g.
	// 198.18.100.0/24 and 2001:db8:100::/64.
	IPv4 netip.Prefix `toml:"ipv4"`
	IPv6 netip.Prefix `toml:"ipv6"`
	// Gateway are the gateway's own tunnel addresses, one per family,
	// inside the pools; default the first host of each pool.
	Gateway []netip.Addr `toml:"gateway"`
	// Static pins identities to addresses: alice = ["198.18.100.10"].
	Static map[string][]netip.Addr `toml:"static"`
	// Groups reserve ranges of the pools for the members of a group.
	Groups []ipam.GroupRange `toml:"group"`
	// Routes are pushed to clients: the LAN prefixes reachable through
	// the tunnel (split tunnel), or 0.0.0.0/0 and ::/0 (full tunnel).
	Routes []netip.Prefix `toml:"routes"`
	// DNS servers and search domains pushed to clients.
	DNS           []netip.Addr `toml:"dns"`
	SearchDomains []string     `toml:"search_domains"`
	// MTU of the tunnel, gateway and clients. Default tun.DefaultMTU.
	MTU int `toml:"mtu"`
	// ClientToClient lets clients reach each other, by VPN packets and by
	// forwards through the gateway. Default false.
	ClientToClient bool `toml:"client_to_client"`
	// LANToClients lets hosts on the LAN open connections to clients
	// (e.g. IT support reaching laptops). Default false: an nftables
	// rule drops them, in NAT and routed mode alike.
	LANToClients bool `toml:"lan_to_clients"`
	// Forwarding is "nat" (default) or "routed".
	Forwarding string `toml:"forwarding"`
	// LANInterface is the interface NAT masquerades out of; default every
	// interface but the TUN device.
	LANInterface string `toml:"lan_interface"`
	// LANAnnounce is how the LAN finds the gateway holding a client's
	// address in routed mode: "none" (default: the LAN routes the pools to
	// the gateways) or "proxy-arp" (the holding gateway answers ARP/NDP
	// for it on lan_interface and announces takeovers; see lan.Neighbours).
	LANAnnounce string `toml:"lan_announce"`
	// TUN is the name of the gateway's TUN device; default tun.DefaultName.
	TUN string `toml:"tun"`
	// Offload: as ClientVPN.Offload.
	Offload *bool `toml:"offload"`
	// StateDir holds leases.json (sticky leases) and the TUN
	// configuration record for crash cleanup. Default DefaultStateDir.
	StateDir string `toml:"state_dir"`
	// UDP offers clients the UDP data path (default true); UDPPort is
	// its port on every local address, default the TLS listener's port.
	UDP     *bool `toml:"udp"`
	UDPPort int   `toml:"udp_port"`
	// ManagePathQueue: over UDP, measure the queue the session's packets
	// meet on the path to the client (clock probes) and let each
	// session's CoDel keep it short. Default true.
	ManagePathQueue *bool `toml:"manage_path_queue"`
}

// PathQueueManaged reports the manage_path_queue setting, default true.
func (v *ServerVPN) PathQueueManaged() bool { return v.ManagePathQueue == nil || *v.ManagePathQueue }

// UDPOn reports the udp setting, default true.
func (v *ServerVPN) UDPOn() bool { return v.UDP == nil || *v.UDP }

// Client transports ([vpn] transport).
const (
	// TransportAuto moves VPN packets to UDP while the gateway's UDP
	// port answers, and back to the TLS connection when it does not.
	TransportAuto = "auto"
	// TransportTCP keeps them on the TLS connection.
	TransportTCP = "tcp"
)

// Pool returns the address pool configuration.
func (v *ServerVPN) Pool() ipam.Config {
	return ipam.Config{
		IPv4: v.IPv4, IPv6: v.IPv6, Gateway: v.Gateway, Static: v.Static, Groups: v.Groups,
		StateFile: filepath.Join(v.StateDir, "leases.json"),
	}
}

// ClientVPN is the [vpn] table of client.toml: VPN mode at the client.
type ClientVPN struct {
	// Enable asks the gateway for VPN mode.
	Enable bool `toml:"enable"`
	// TUN is the name of the TUN device; default tun.DefaultName.
	TUN string `toml:"tun"`
	// StateDir holds the TUN configuration record, so that routes and DNS
	// are restored after a crash. Default DefaultStateDir.
	StateDir string `toml:"state_dir"`
	// ResolvConf is the resolv.conf rewritten for DNS on Linux without
	// systemd-resolved. Default /etc/resolv.conf; when set, this file is
	// written even if systemd-resolved runs.
	ResolvConf string `toml:"resolv_conf"`
	// Offload opens the TUN device with the kernel's segmentation
	// offloads (Linux): superpackets, batched reads, GSO passthrough.
	// Default true; false is for kernels that mishandle them.
	Offload *bool `toml:"offload"`
	// Persist keeps the address, routes and DNS between sessions, so that
	// while the client reconnects nothing meant for the tunnel leaves
	// outside it (a kill switch for a full tunnel). Default false: they
	// are undone when a session ends and applied again with the next.
	Persist bool `toml:"persist"`
	// Transport is TransportAuto (default) or TransportTCP.
	Transport string `toml:"transport"`
	// ManagePathQueue: as ServerVPN.ManagePathQueue, towards the gateway.
	ManagePathQueue *bool `toml:"manage_path_queue"`
}

// PathQueueManaged reports the manage_path_queue setting, default true.
func (v *ClientVPN) PathQueueManaged() bool { return v.ManagePathQueue == nil || *v.ManagePathQueue }

// OffloadOn reports the offload setting, default true.
func (v *ClientVPN) OffloadOn() bool { return v.Offload == nil || *v.Offload }

// OffloadOn reports the offload setting, default true.
func (v *ServerVPN) OffloadOn() bool { return v.Offload == nil || *v.Offload }

func (v *ServerVPN) resolve(src *source) {
	if v.StateDir == "" {
		v.StateDir = DefaultStateDir
	}
	v.StateDir = src.resolve(v.StateDir)
	if v.Forwarding == "" {
		v.Forwarding = ForwardingNAT
	}
	if v.LANAnnounce == "" {
		v.LANAnnounce = LANAnnounceNone
	}
	if v.MTU == 0 {
		v.MTU = tun.DefaultMTU
	}
}

func (v *ClientVPN) resolve(src *source) {
	if v.StateDir == "" {
		v.StateDir = DefaultStateDir
	}
	v.StateDir = src.resolve(v.StateDir)
	v.ResolvConf = src.resolve(v.ResolvConf)
	if v.Transport == "" {
		v.Transport = TransportAuto
	}
}

func (v *ClientVPN) validate(src *source) error {
	switch v.Transport {
	case "", TransportAuto, TransportTCP: // "": a config built in code
		return nil
	}
	return src.errf("vpn.transport", "%q: want %q or %q", v.Transport, TransportAuto, TransportTCP)
}

func (v *ServerVPN) validate(src *source) error {
	if !v.Enable {
		return nil
	}
	pool := v.Pool()
	if err := pool.Validate(); err != nil {
		return src.err(ipamKey(err))
	}
	switch v.Forwarding {
	case ForwardingNAT, ForwardingRouted:
	default:
		return src.errf("vpn.forwarding", "%q: want %q or %q", v.Forwarding, ForwardingNAT, ForwardingRouted)
	}
	switch v.LANAnnounce {
	case "", LANAnnounceNone: // "": a config built in code
	case LANAnnounceProxyARP:
		if v.Forwarding != ForwardingRouted {
			return src.errf("vpn.lan_announce", "%q needs forwarding = %q (with NAT the LAN sees only the gateway's own address)", v.LANAnnounce, ForwardingRouted)
		}
		if v.LANInterface == "" {
			return src.errf("vpn.lan_announce", "%q needs lan_interface: the interface on the LAN to answer ARP/NDP on", v.LANAnnounce)
		}
	default:
		return src.errf("vpn.lan_announce", "%q: want %q or %q", v.LANAnnounce, LANAnnounceNone, LANAnnounceProxyARP)
	}
	if v.UDPPort < 0 || v.UDPPort > 65535 {
		return src.errf("vpn.udp_port", "%d: want 1..65535 (0: the listen port)", v.UDPPort)
	}
	if v.TUN != "" {
		if err := tun.ValidateName(runtime.GOOS, v.TUN); err != nil {
			return src.err("vpn.tun", err)
		}
	}
	// What clients will apply must be a valid device configuration:
	// check it with the pool's first host standing in for a client.
	tc := tun.Config{MTU: v.MTU, Routes: v.Routes, DNS: v.DNS, SearchDomains: v.SearchDomains}
	for _, p := range []netip.Prefix{v.IPv4, v.IPv6} {
		if p.IsValid() {
			tc.Addresses = append(tc.Addresses, netip.PrefixFrom(p.Addr().Next(), p.Bits()))
		}
	}
	for _, r := range v.Routes {
		if r.Bits() == 0 {
			tc.Bypass = []netip.Addr{netip.MustParseAddr("198.19.255.254")} // the client supplies the real one
		}
	}
	if err := tc.Validate(); err != nil {
		return src.err(tunKey(err), err)
	}
	return nil
}

// ipamKey maps an ipam config error ("...: gateway[1]: problem") to the
// key at fault and the problem.
func ipamKey(err error) (string, error) {
	msg := strings.TrimPrefix(err.Error(), ipam.ErrInvalidConfig.Error()+": ")
	field, problem, ok := strings.Cut(msg, ": ")
	if !ok || strings.Contains(field, " ") {
		return "vpn", err
	}
	if field == "ipv4/ipv6" {
		field = "ipv4"
	}
	if field == "groups" || strings.HasPrefix(field, "group") {
		field = strings.Replace(field, "groups", "group", 1)
	}
	return "vpn." + field, errors.New(problem)
}

// tunKey names the [vpn] key a tun.Config error is about, by what it
// mentions.
func tunKey(err error) string {
	msg := err.Error()
	for _, k := range []struct{ word, key string }{
		{"mtu", "vpn.mtu"}, {"route", "vpn.routes"}, {"DNS", "vpn.dns"}, {"dns", "vpn.dns"},
		{"search", "vpn.search_domains"}, {"domain", "vpn.search_domains"},
	} {
		if strings.Contains(msg, k.word) {
			return k.key
		}
	}
	return "vpn"
}
