package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

func init() { subcommands = append(subcommands, newClientCmd, newForwardCmd) }

// forwardFlags are the -L/-R/-D flags shared by client and forward.
type forwardFlags struct{ local, remote, dynamic []string }

func (f *forwardFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.local, "local", "L", nil, "local forward [bind:]port:host:hostport: listen here, connect from the gateway; repeatable")
	cmd.Flags().StringArrayVarP(&f.remote, "remote", "R", nil, "remote forward [bind:]port:host:hostport: the gateway listens, connect from here; repeatable")
	cmd.Flags().StringArrayVarP(&f.dynamic, "dynamic", "D", nil, "SOCKS5 proxy [bind:]port: listen here, connect from the gateway; repeatable")
}

func (f *forwardFlags) parse() ([]config.Forward, error) {
	var out []config.Forward
	for _, group := range f.groups() {
		for _, spec := range group.specs {
			fw, err := config.ParseForward(group.kind, spec)
			if err != nil {
				return nil, err
			}
			out = append(out, fw)
		}
	}
	return out, nil
}

// forwardGroup is the specs given with one of -L, -R and -D.
type forwardGroup struct {
	kind  string
	specs []string
}

func (f *forwardFlags) groups() []forwardGroup {
	return []forwardGroup{{"L", f.local}, {"R", f.remote}, {"D", f.dynamic}}
}

// flags returns the flags as given ("-L 8080:db:5432"), in parse's order.
func (f *forwardFlags) flags() []string {
	var out []string
	for _, group := range f.groups() {
		for _, spec := range group.specs {
			out = append(out, "-"+group.kind+" "+spec)
		}
	}
	return out
}

// forwardFlagKeys are the configuration keys that forward's flags set.
var forwardFlagKeys = map[string]string{
	"servers":               "--server",
	"server_name":           "--server-name",
	"tls.cert":              "--cert",
	"tls.key":               "--key",
	"tls.key_password_file": "--key-password-file",
	"tls.server_ca":         "--ca",
	"tls.pins":              "--pin",
	"socks.user":            "--socks-user",
	"socks.password_file":   "--socks-password-file",
	"proxy.url":             "--proxy",
	"proxy.no_proxy":        "--no-proxy",
	"proxy.user":            "--proxy-user",
	"proxy.password_file":   "--proxy-password-file",
	"control.socket":        "--control-socket",
	"metrics.listen":        "--metrics-listen",
}

// forwardError restates a configuration error in forward's flags: forward
// has no configuration file, so "tls.server_ca: required" or "set
// tls.key_password_file" would name keys the user cannot set.
func forwardError(err error, fwd *forwardFlags) error {
	var ce *config.Error
	if !errors.As(err, &ce) {
		return err
	}
	specs := fwd.flags()
	flag := func(key string) string {
		if base, _, _ := strings.Cut(key, "["); forwardFlagKeys[base] != "" {
			return forwardFlagKeys[base]
		}
		var i int
		if _, err := fmt.Sscanf(key, "forward[%d]", &i); err == nil && i < len(specs) {
			return specs[i]
		}
		return key
	}
	msg := ce.Err.Error()
	var (
		insecure  *config.InsecureFileError
		encrypted *config.EncryptedKeyError
		unpaired  *config.UnpairedError
		reused    *config.ListenReusedError
	)
	switch {
	case errors.As(ce.Err, &insecure):
		// forward has no flag to allow readable secrets: chmod is the fix.
		msg = fmt.Sprintf("secret file %s is readable by group/others (mode %04o); chmod 600 it", insecure.Path, uint32(insecure.Mode))
	case errors.As(ce.Err, &encrypted):
		msg = fmt.Sprintf("%s is encrypted: give %s with a file holding its password", encrypted.Path, flag(encrypted.PasswordKey))
	case errors.As(ce.Err, &unpaired):
		msg = fmt.Sprintf("%v: %s is given, so is %s", config.ErrRequired, flag(unpaired.Given), flag(ce.Key))
	case errors.As(ce.Err, &reused):
		msg = fmt.Sprintf("listen address %s is also used by %s", reused.Addr, flag(fmt.Sprintf("forward[%d]", reused.Other)))
	}
	return fmt.Errorf("%s: %s", flag(ce.Key), msg)
}

func newClientCmd() *cobra.Command {
	var (
		path string
		fwd  forwardFlags
	)
	cmd := &cobra.Command{
		Use:   "client -c client.toml",
		Short: "Run the client daemon",
		Long: `client connects to the gateways listed in client.toml (in order, reconnecting
with backoff), proves its identity with its certificate, verifies the
gateway's, and serves the configured forwards. -L/-R/-D flags add forwards
to those in the file. SIGHUP reloads the certificate, key and CA bundle for
the next connection; SIGTERM or Ctrl-C stops.

'twoway config example client' prints a complete, commented client.toml.`,
		Example: `  twoway client -c client.toml
  twoway client -c client.toml -L 5432:db.corp.example:5432`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return daemon.ErrNoConfig
			}
			cfg, err := config.LoadClient(path)
			if err != nil {
				return err
			}
			extra, err := fwd.parse()
			if err != nil {
				return err
			}
			if len(extra) > 0 {
				cfg.Forwards = append(cfg.Forwards, extra...)
				if err := cfg.Validate(); err != nil {
					return err
				}
			}
			return daemon.RunClient(cmd.Context(), cfg, logHandler(cmd))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "client configuration file (TOML)")
	fwd.add(cmd)
	return cmd
}

func newForwardCmd() *cobra.Command {
	var (
		cfg     = config.DefaultClient()
		fwd     forwardFlags
		keyPass string
	)
	cmd := &cobra.Command{
		Use:   "forward --server HOST:PORT --cert FILE --key FILE --ca FILE (-L|-R|-D SPEC)...",
		Short: "Forward ports through a gateway, without a config file, root or TUN",
		Long: `forward is the port-forward mode: everything on the command line, no config
file, no root, no TUN device. Forwards use ssh's syntax:

  -L [bind:]port:host:hostport   listen on bind:port here; the gateway connects to host:hostport
  -R [bind:]port:host:hostport   the gateway listens on bind:port; this side connects to host:hostport
  -D [bind:]port                 a SOCKS5 proxy here; the gateway makes the connections

bind defaults to 127.0.0.1; '*' means every interface. Every connection is
checked against the gateway's policy for this certificate's identity. A -D
proxy bound beyond loopback should require a password: --socks-user and
--socks-password-file (RFC 1929 username/password authentication).`,
		Example: `  twoway forward --server gw.example.com:8443 --cert alice.crt --key alice.key \
      --ca server-ca/bundle.crt -L 5432:db.corp.example:5432 -D 1080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.TLS.KeyPasswordFile = keyPass
			fws, err := fwd.parse()
			if err != nil {
				return err
			}
			if len(fws) == 0 {
				return fmt.Errorf("nothing to forward: give at least one -L, -R or -D")
			}
			cfg.Forwards = fws
			if err := cfg.Validate(); err != nil {
				return forwardError(err, &fwd)
			}
			return daemon.RunClient(cmd.Context(), cfg, logHandler(cmd))
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Servers, "server", nil, "gateway host:port; repeat to list fallbacks, tried in order")
	f.StringVar(&cfg.ServerName, "server-name", "", "name the gateway certificate must carry (default: the host of --server)")
	f.StringVar(&cfg.TLS.Cert, "cert", "", "client certificate (PEM, leaf then chain)")
	f.StringVar(&cfg.TLS.Key, "key", "", "private key of --cert (mode 0600)")
	f.StringVar(&keyPass, "key-password-file", "", "file whose first line is the password of an encrypted --key")
	f.StringVar(&cfg.TLS.ServerCA, "ca", "", "CA bundle the gateway certificate must chain to (server-ca/bundle.crt)")
	f.StringArrayVar(&cfg.TLS.Pins, "pin", nil, "SPKI pin the gateway chain must contain (base64 SHA-256); repeatable")
	f.StringVar(&cfg.User, "user", "", `started as root: the account to run as once the listeners are open (default "twoway" if it exists; "root" keeps root)`)
	f.StringVar(&cfg.Control.Socket, "control-socket", "", "control socket for `twoway status` (default: the platform's; \"off\" disables)")
	f.StringVar(&cfg.Metrics.Listen, "metrics-listen", "", "serve Prometheus metrics on this host:port (default: off)")
	f.StringVar(&cfg.SOCKS.User, "socks-user", "", "SOCKS5 user name that -D proxies require (with --socks-password-file)")
	f.StringVar(&cfg.SOCKS.PasswordFile, "socks-password-file", "", "file whose first line is the SOCKS5 password -D proxies require")
	f.StringVar(&cfg.Proxy.URL, "proxy", "", `HTTP proxy to reach the gateway through, http://host:port (default: HTTPS_PROXY from the environment; "direct": none)`)
	f.StringVar(&cfg.Proxy.NoProxy, "no-proxy", "", "with --proxy: gateways reached directly (NO_PROXY syntax)")
	f.StringVar(&cfg.Proxy.User, "proxy-user", "", "user name for the proxy's Basic authentication (with --proxy-password-file)")
	f.StringVar(&cfg.Proxy.PasswordFile, "proxy-password-file", "", "file whose first line is the proxy password")
	fwd.add(cmd)
	for _, name := range []string{"server", "cert", "key", "ca"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
