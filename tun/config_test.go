package tun

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddr(v)
	}
	return out
}

// validConfig is a dual-stack split tunnel every case below starts from.
func validConfig() Config {
	return Config{
		Addresses:     pfx("198.18.0.2/24", "2001:db8::2/64"),
		MTU:           1400,
		Routes:        pfx("198.19.0.0/16", "2001:db8:1::/48"),
		DNS:           addrs("198.18.0.53"),
		SearchDomains: []string{"corp.example"},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid split", func(*Config) {}, ""},
		{"valid full with bypass", func(c *Config) {
			c.Routes = pfx("0.0.0.0/0", "::/0")
			c.Bypass = addrs("203.0.113.7")
		}, ""},
		{"valid ipv4 only small mtu", func(c *Config) {
			c.Addresses = pfx("198.18.0.2/24")
			c.Routes = pfx("198.19.0.0/16")
			c.MTU = 576
		}, ""},
		{"valid /32 and /31", func(c *Config) { c.Addresses = pfx("198.18.0.2/32", "198.18.1.0/31"); c.Routes = nil }, ""},
		{"valid no dns", func(c *Config) { c.DNS, c.SearchDomains = nil, nil }, ""},
		{"trailing dot domain", func(c *Config) { c.SearchDomains = []string{"corp.example."} }, ""},

		{"no address", func(c *Config) { c.Addresses = nil }, "no interface address"},
		{"invalid address", func(c *Config) { c.Addresses = []netip.Prefix{{}} }, "invalid address"},
		{"loopback address", func(c *Config) { c.Addresses = pfx("127.0.0.2/8") }, "unicast"},
		{"multicast address", func(c *Config) { c.Addresses = pfx("ff02::1/64"); c.Routes = nil }, "unicast"},
		{"mapped address", func(c *Config) { c.Addresses = pfx("::ffff:198.18.0.2/120") }, "IPv4-mapped"},
		{"zero bits", func(c *Config) { c.Addresses = pfx("198.18.0.2/0") }, "prefix length 0"},
		{"network address", func(c *Config) { c.Addresses = pfx("198.18.0.0/24") }, "network or broadcast"},
		{"broadcast address", func(c *Config) { c.Addresses = pfx("198.18.0.255/24") }, "network or broadcast"},
		{"v6 anycast", func(c *Config) { c.Addresses = pfx("198.18.0.2/24", "2001:db8::/64") }, "anycast"},
		{"duplicate address", func(c *Config) { c.Addresses = pfx("198.18.0.2/24", "198.18.0.2/24") }, "listed twice"},
		{"overlapping addresses", func(c *Config) { c.Addresses = pfx("198.18.0.2/24", "198.18.0.9/16", "2001:db8::2/64") }, "overlap"},

		{"mtu too small", func(c *Config) { c.Addresses = pfx("198.18.0.2/24"); c.Routes = nil; c.MTU = 575 }, "mtu 575"},
		{"mtu too large", func(c *Config) { c.MTU = 65536 }, "mtu 65536"},
		{"mtu ipv6", func(c *Config) { c.MTU = 1279 }, "IPv6 needs at least 1280"},

		{"host bits", func(c *Config) { c.Routes = pfx("198.19.1.0/16") }, "did you mean 198.19.0.0/16"},
		{"duplicate route", func(c *Config) { c.Routes = pfx("198.19.0.0/16", "198.19.0.0/16") }, "listed twice"},
		{"nested routes", func(c *Config) { c.Routes = pfx("198.19.0.0/16", "198.19.4.0/24") }, "overlap"},
		{"default plus split", func(c *Config) {
			c.Routes = pfx("0.0.0.0/0", "198.19.0.0/16")
			c.Bypass = addrs("203.0.113.7")
		}, "overlap"},
		{"route family without address", func(c *Config) { c.Addresses = pfx("198.18.0.2/24"); c.Routes = pfx("2001:db8:1::/48") }, "no IPv6 address"},
		{"v4 route without v4 address", func(c *Config) {
			c.Addresses = pfx("2001:db8::2/64")
			c.Routes = pfx("198.19.0.0/16")
			c.DNS = nil
			c.SearchDomains = nil
		}, "no IPv4 address"},
		{"loopback route", func(c *Config) { c.Routes = pfx("127.0.0.0/8") }, "loopback"},
		{"link-local route", func(c *Config) { c.Routes = pfx("fe80::/10") }, "link-local"},
		{"route equals subnet", func(c *Config) { c.Routes = pfx("198.18.0.0/24") }, "subnet of address"},
		{"full without bypass", func(c *Config) { c.Routes = pfx("0.0.0.0/0") }, "needs the gateway's address"},

		{"bypass inside tunnel subnet", func(c *Config) { c.Bypass = addrs("198.18.0.9") }, "inside the tunnel's own subnet"},
		{"bypass loopback", func(c *Config) { c.Bypass = addrs("::1") }, "unicast"},
		{"bypass twice", func(c *Config) { c.Bypass = addrs("203.0.113.7", "203.0.113.7") }, "listed twice"},

		{"dns invalid", func(c *Config) { c.DNS = []netip.Addr{{}} }, "invalid address"},
		{"dns unspecified", func(c *Config) { c.DNS = addrs("0.0.0.0") }, "not a unicast"},
		{"dns twice", func(c *Config) { c.DNS = addrs("198.18.0.53", "198.18.0.53") }, "listed twice"},
		{"domains without dns", func(c *Config) { c.DNS = nil }, "without dns"},
		{"domain with space", func(c *Config) { c.SearchDomains = []string{"corp example"} }, "only letters"},
		{"domain injection", func(c *Config) { c.SearchDomains = []string{"corp.example\nnameserver 1.1.1.1"} }, "only letters"},
		{"domain quote", func(c *Config) { c.SearchDomains = []string{"a'b.example"} }, "only letters"},
		{"domain empty label", func(c *Config) { c.SearchDomains = []string{"corp..example"} }, "empty label"},
		{"domain hyphen", func(c *Config) { c.SearchDomains = []string{"-corp.example"} }, "starts or ends"},
		{"domain long label", func(c *Config) { c.SearchDomains = []string{strings.Repeat("a", 64) + ".example"} }, "longer than 63"},
		{"domain twice", func(c *Config) { c.SearchDomains = []string{"Corp.example", "corp.example."} }, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestKernelRoutesSplitDefaults(t *testing.T) {
	c := Config{Routes: pfx("0.0.0.0/0", "::/0")}
	want := pfx("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")
	if got := c.KernelRoutes(); !slices.Equal(got, want) {
		t.Fatalf("KernelRoutes = %v, want %v", got, want)
	}
	// The halves together cover exactly the family: every address is in
	// one half, and neither half is the default route.
	for _, a := range addrs("0.0.0.0", "127.255.255.255", "128.0.0.0", "255.255.255.255", "::", "7fff::1", "8000::", "ffff::1") {
		n := 0
		for _, h := range want {
			if h.Contains(a) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s is in %d halves", a, n)
		}
	}
	if !c.FullTunnel() {
		t.Error("FullTunnel = false")
	}
	split := validConfig()
	if split.FullTunnel() || !slices.Equal(split.KernelRoutes(), split.Routes) {
		t.Errorf("split config: FullTunnel=%v KernelRoutes=%v", split.FullTunnel(), split.KernelRoutes())
	}
}

func TestBypassRoutesOnlyForCoveredAddresses(t *testing.T) {
	c := Config{
		Routes: pfx("0.0.0.0/0", "2001:db8:1::/48"),
		Bypass: addrs("203.0.113.7", "2001:db8:2::1", "2001:db8:1::5"),
	}
	want := addrs("203.0.113.7", "2001:db8:1::5")
	if got := c.BypassRoutes(); !slices.Equal(got, want) {
		t.Fatalf("BypassRoutes = %v, want %v", got, want)
	}
}

func TestDNSScope(t *testing.T) {
	c := validConfig()
	if c.dnsGetsAll() {
		t.Error("split tunnel with search domains: DNS should be split")
	}
	c.SearchDomains = nil
	if !c.dnsGetsAll() {
		t.Error("no search domains: DNS should get every query")
	}
	c = validConfig()
	c.Routes, c.Bypass = pfx("0.0.0.0/0"), addrs("203.0.113.7")
	if !c.dnsGetsAll() {
		t.Error("full tunnel: DNS should get every query")
	}
	c.DNS, c.SearchDomains = nil, nil
	if c.dnsGetsAll() {
		t.Error("no DNS servers: nothing to send queries to")
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		goos, name string
		ok         bool
	}{
		{"linux", "twoway0", true},
		{"linux", "tw-test_1.a", true},
		{"linux", "sixteen-chars-xx", false},
		{"linux", "fifteen-chars-x", true},
		{"linux", "", false},
		{"linux", "a b", false},
		{"linux", "a/b", false},
		{"linux", "-x", false},
		{"linux", "..", false},
		{"darwin", "utun", true},
		{"darwin", "utun7", true},
		{"darwin", "utun07", false},
		{"darwin", "tun0", false},
		{"darwin", "utunx", false},
		{"windows", "twoway", true},
		{"windows", "two way", false},
		{"windows", `a"b`, false},
	} {
		err := ValidateName(tc.goos, tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%s, %q) = %v, want ok=%v", tc.goos, tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ValidateName(%s, %q) = %v, not ErrInvalidConfig", tc.goos, tc.name, err)
		}
	}
}

func TestOpenValidatesBeforeTouchingTheSystem(t *testing.T) {
	// These fail validation, so they need no privileges and create nothing.
	for _, tc := range []struct {
		name string
		mtu  int
	}{
		{"twoway0", 100},
		{"twoway0", 70000},
		{"bad name!", 1400},
	} {
		if _, err := Open(tc.name, tc.mtu); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Open(%q, %d) = %v, want ErrInvalidConfig", tc.name, tc.mtu, err)
		}
	}
}
