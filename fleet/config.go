package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Defaults for the optional Config fields.
const (
	DefaultPrefix      = "/twoway/"
	DefaultDialTimeout = 5 * time.Second
	DefaultLeaseTTL    = 10 * time.Second
)

// What a gateway does with a new session's address request while etcd
// cannot be reached (Config.StoreUnreachable).
const (
	// StoreRefuse refuses it: the session gets no VPN address. Sessions
	// that already hold their addresses on this gateway are served.
	StoreRefuse = "refuse"
	// StoreServeCached gives an identity whose record this gateway's view
	// of etcd holds exactly those addresses, when that takes nothing from
	// anyone, and writes the hold to etcd once it is back. Identities
	// without a record are refused.
	StoreServeCached = "serve-cached"
)

// Limits on LeaseTTL. etcd counts lease TTLs in whole seconds and raises
// short ones to its own minimum (1.5 election timeouts, 2 s by default); a
// long one keeps a dead gateway's users "online", and so their addresses
// unreclaimable, for that long.
const (
	minLeaseTTL = 2 * time.Second
	maxLeaseTTL = 10 * time.Minute
)

// ErrInvalidConfig wraps every error from Config.Validate.
var ErrInvalidConfig = errors.New("invalid fleet config")

// Config is server.toml's [fleet]: how a gateway joins the fleet's etcd
// cluster. It is plain data; New validates it.
type Config struct {
	// Endpoints are the etcd client URLs, e.g. https://etcd1:2379, or
	// host:port. An existing etcd cluster, not one twoway runs.
	Endpoints []string `toml:"endpoints"`

	// CertFile and KeyFile are this gateway's client certificate and
	// key for etcd's mutual TLS, and CAFile the CA that issued etcd's
	// server certificates. These are etcd's PKI, not the VPN's. Without
	// CAFile the connection is plain (tests, a loopback etcd).
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	CAFile   string `toml:"ca_file"`

	// Prefix is put before every key twoway writes (DefaultPrefix), so
	// that fleets, or twoway and other users, can share one cluster.
	Prefix string `toml:"prefix"`

	// Name is this gateway's name in the fleet, unique in it: its holds
	// on addresses are filed under it. Required.
	Name string `toml:"name"`

	// DialTimeout bounds each request to etcd (DefaultDialTimeout).
	DialTimeout time.Duration `toml:"dial_timeout"`

	// LeaseTTL is how long after its last word to etcd a dead gateway's
	// holds vanish (DefaultLeaseTTL); whole seconds.
	LeaseTTL time.Duration `toml:"lease_ttl"`

	// StoreUnreachable is StoreRefuse (the default) or StoreServeCached.
	StoreUnreachable string `toml:"store_unreachable"`
}

// withDefaults returns cfg with the defaults filled in.
func (cfg Config) withDefaults() Config {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.StoreUnreachable == "" {
		cfg.StoreUnreachable = StoreRefuse
	}
	return cfg
}

func invalid(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...))
}

// Validate checks cfg, with the defaults filled in, and reads the TLS
// files, without connecting. Errors wrap ErrInvalidConfig and name the
// key at fault.
func (cfg Config) Validate() error {
	_, err := cfg.withDefaults().tlsConfig()
	return err
}

// tlsConfig checks cfg and returns the TLS configuration for etcd, nil
// for plain connections.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, invalid("endpoints", "no etcd endpoint")
	}
	tlsOn := cfg.CAFile != ""
	for i, ep := range cfg.Endpoints {
		key := "endpoints[" + strconv.Itoa(i) + "]"
		if err := checkEndpoint(ep, tlsOn); err != nil {
			return nil, invalid(key, "%q: %v", ep, err)
		}
	}
	switch {
	case cfg.Name == "":
		return nil, invalid("name", "required: this gateway's name in the fleet")
	case strings.ContainsFunc(cfg.Name, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return nil, invalid("name", "%q: no slashes, spaces or control characters", cfg.Name)
	case !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/"):
		// The trailing slash keeps /twoway from also matching the keys
		// of a fleet under /twoway2.
		return nil, invalid("prefix", "%q must start and end with /", cfg.Prefix)
	case cfg.DialTimeout > 0 && cfg.DialTimeout < time.Millisecond:
		return nil, invalid("dial_timeout", "%v is too short: write durations with a unit, e.g. \"5s\"", cfg.DialTimeout)
	case cfg.DialTimeout < 100*time.Millisecond:
		return nil, invalid("dial_timeout", "%v is too short (minimum 100ms)", cfg.DialTimeout)
	case cfg.LeaseTTL < minLeaseTTL || cfg.LeaseTTL > maxLeaseTTL:
		return nil, invalid("lease_ttl", "%v is outside %v to %v", cfg.LeaseTTL, minLeaseTTL, maxLeaseTTL)
	case cfg.LeaseTTL%time.Second != 0:
		return nil, invalid("lease_ttl", "%v is not whole seconds", cfg.LeaseTTL)
	case cfg.StoreUnreachable != StoreRefuse && cfg.StoreUnreachable != StoreServeCached:
		return nil, invalid("store_unreachable", "%q: want %q or %q", cfg.StoreUnreachable, StoreRefuse, StoreServeCached)
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		return nil, invalid("cert_file/key_file", "set both or neither")
	case cfg.CertFile != "" && !tlsOn:
		return nil, invalid("ca_file", "required with cert_file: the CA of etcd's server certificates")
	}
	if !tlsOn {
		return nil, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, invalid("ca_file", "%v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, invalid("ca_file", "%s: no PEM certificate", cfg.CAFile)
	}
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, invalid("cert_file/key_file", "%v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// checkEndpoint checks one etcd endpoint: host:port, or an http(s) URL
// whose scheme agrees with whether TLS is configured.
func checkEndpoint(ep string, tlsOn bool) error {
	hostport := ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return err
		}
		switch {
		case u.Scheme == "https" && !tlsOn:
			return errors.New("https without ca_file")
		case u.Scheme == "http" && tlsOn:
			return errors.New("http with ca_file set: use https")
		case u.Scheme != "http" && u.Scheme != "https":
			return fmt.Errorf("scheme %q, want http or https", u.Scheme)
		case u.Path != "" && u.Path != "/":
			return errors.New("has a path")
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("no host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}
