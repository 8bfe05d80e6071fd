package config

import (
	"errors"
	"strings"
	"time"

	"github.com/twoway/twoway/fleet"
)

// ServerFleet is the [fleet] table of server.toml: the etcd cluster a
// fleet of gateways shares its state through. Without endpoints the
// gateway is on its own (the default).
type ServerFleet struct {
	// Endpoints are etcd's client URLs (https://etcd1:2379) or host:port.
	Endpoints []string `toml:"endpoints"`
	// CertFile and KeyFile are this gateway's client certificate and key
	// for etcd's mutual TLS, CAFile the CA of etcd's server certificates:
	// etcd's PKI, not the VPN's. Without ca_file the connection is plain.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	CAFile   string `toml:"ca_file"`
	// Prefix goes before every key twoway writes (default "/twoway/").
	Prefix string `toml:"prefix"`
	// Name is this gateway's name in the fleet, unique in it. Required.
	Name string `toml:"name"`
	// DialTimeout bounds each request to etcd (5s); LeaseTTL is how long
	// after its last word a dead gateway's holds vanish (10s).
	DialTimeout time.Duration `toml:"dial_timeout"`
	LeaseTTL    time.Duration `toml:"lease_ttl"`
	// StoreUnreachable is what new sessions get while etcd cannot be
	// reached: "refuse" (the default) no VPN address; "serve-cached" the
	// addresses the gateway knows the identity had, if it knows any.
	StoreUnreachable string `toml:"store_unreachable"`
	// AllowInsecurePermissions skips the group/other permission check on
	// KeyFile.
	AllowInsecurePermissions bool `toml:"allow_insecure_permissions"`
}

// Enabled reports whether the gateway is part of a fleet.
func (f *ServerFleet) Enabled() bool { return len(f.Endpoints) > 0 }

// Config is the fleet package's form of the table.
func (f *ServerFleet) Config() fleet.Config {
	return fleet.Config{Endpoints: f.Endpoints, CertFile: f.CertFile, KeyFile: f.KeyFile, CAFile: f.CAFile,
		Prefix: f.Prefix, Name: f.Name, DialTimeout: f.DialTimeout, LeaseTTL: f.LeaseTTL,
		StoreUnreachable: f.StoreUnreachable}
}

func (f *ServerFleet) resolve(src *source) {
	f.CertFile = src.resolve(f.CertFile)
	f.KeyFile = src.resolve(f.KeyFile)
	f.CAFile = src.resolve(f.CAFile)
}

func (f *ServerFleet) validate(src *source) error {
	if !f.Enabled() {
		if f.Name != "" || f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.Prefix != "" || f.StoreUnreachable != "" {
			return src.errf("fleet.endpoints", "%w: the [fleet] table names no etcd endpoints", ErrRequired)
		}
		return nil
	}
	if f.Name == "" {
		return src.errf("fleet.name", "%w: this gateway's name in the fleet, e.g. name = \"gw1\"", ErrRequired)
	}
	if f.KeyFile != "" {
		if _, err := checkSecretFile(src, "fleet.key_file", f.KeyFile, f.AllowInsecurePermissions); err != nil {
			return err
		}
	}
	if err := f.Config().Validate(); err != nil {
		key, problem := fleetKey(err)
		return src.err(key, problem)
	}
	return nil
}

// fleetKey maps a fleet config error ("...: endpoints: problem") to the key
// at fault and the problem.
func fleetKey(err error) (string, error) {
	msg := strings.TrimPrefix(err.Error(), fleet.ErrInvalidConfig.Error()+": ")
	field, problem, ok := strings.Cut(msg, ": ")
	if !ok || strings.Contains(field, " ") {
		return "fleet", err
	}
	if field == "cert_file/key_file" {
		field = "cert_file"
	}
	return "fleet." + field, errors.New(problem)
}
