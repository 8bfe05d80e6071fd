package config

import (
	"errors"
	"path/filepath"

	"github.com/twoway/twoway/keystore"
)

// Control is the [control] table: the local socket `twoway status` and
// `twoway kick` talk to.
type Control struct {
	// Socket is the unix socket path (a named pipe name on Windows).
	// Empty means the platform default (/run/twoway/ROLE.sock for root);
	// "off" disables the socket.
	Socket string `toml:"socket"`
}

// Metrics is the [metrics] table.
type Metrics struct {
	// Listen is host:port for the Prometheus /metrics endpoint; empty
	// (the default) disables it.
	Listen string `toml:"listen"`
}

// ControlOff is the Socket value that disables the control socket.
const ControlOff = "off"

func (c *Control) validate(src *source) error {
	if c.Socket == "" || c.Socket == ControlOff {
		return nil
	}
	if !filepath.IsAbs(c.Socket) && !isPipeName(c.Socket) {
		return src.errf("control.socket", "%q: must be an absolute path (or %q)", c.Socket, ControlOff)
	}
	return nil
}

func isPipeName(s string) bool { return len(s) > 9 && s[:9] == `\\.\pipe\` }

func (m *Metrics) validate(src *source) error {
	if m.Listen == "" {
		return nil
	}
	if err := checkListen(src, "metrics.listen", m.Listen); err != nil {
		return err
	}
	return nil
}

// validateOps checks both tables.
func validateOps(src *source, c *Control, m *Metrics) error {
	if err := c.validate(src); err != nil {
		return err
	}
	return m.validate(src)
}

// checkOwnCredentials checks a [tls] table's certificate, key (matching,
// not readable by others) and key password file: the part server and
// client configurations share.
func checkOwnCredentials(src *source, cert, key, passFile string, allowInsecure bool) error {
	if cert == "" && keystore.CarriesCertificate(key) {
		// An OS store identity: the certificate comes from the store.
		if err := keystore.Check(key); err != nil {
			return src.err("tls.key", err)
		}
		if passFile != "" {
			return src.err("tls.key_password_file", errors.New("not used with a key in the OS store: remove it"))
		}
		return nil
	}
	certs, err := checkCertificates(src, "tls.cert", cert)
	if err != nil {
		return err
	}
	if keystore.IsReference(key) {
		// The token is not opened here (config check stays offline and
		// PIN-free); whether its key matches the certificate is checked
		// when the daemon loads it.
		if err := keystore.Check(key); err != nil {
			return src.err("tls.key", err)
		}
		if passFile != "" {
			return src.err("tls.key_password_file", errors.New("not used with a key in a token (its PIN comes from the reference's pin-source): remove it"))
		}
		return nil
	}
	if err := checkKeyPair(src, "tls.key", key, certs[0], passFile, allowInsecure); err != nil {
		return err
	}
	if passFile != "" {
		if _, err := checkSecretFile(src, "tls.key_password_file", passFile, allowInsecure); err != nil {
			return err
		}
	}
	return nil
}
