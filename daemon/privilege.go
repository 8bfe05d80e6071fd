package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"

	"github.com/twoway/twoway/config"
)

// ErrPrivilegeDrop means the daemon could not become the configured user.
var ErrPrivilegeDrop = errors.New("cannot drop privileges")

// privilegeDrop is whom a daemon started as root becomes: decided by
// planDrop, done by dropTo (per OS).
type privilegeDrop struct {
	uid, gid int
	groups   []int
	name     string
	explicit bool // `user` was set: failing to drop is an error
}

// planDrop decides whether and to whom a daemon running as euid drops its
// privileges after start (see config.RunAs). It returns nil to stay as it
// is, with the reason when that is worth a log line.
func planDrop(configured string, vpn bool, euid int, lookup func(string) (*user.User, error)) (*privilegeDrop, string, error) {
	if euid != 0 {
		return nil, "", nil
	}
	name, explicit := config.RunAs(configured, vpn)
	switch {
	case name == "" && vpn:
		return nil, "VPN mode runs as root: it changes routes, NAT and DNS while it runs and undoes them at stop", nil
	case name == "":
		return nil, "", nil // user = "root"
	}
	u, err := lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if !explicit && errors.As(err, &unknown) {
			return nil, fmt.Sprintf("running as root: there is no %s account to drop to; create it or set user", name), nil
		}
		return nil, "", fmt.Errorf("%w: user %s: %w", ErrPrivilegeDrop, name, err)
	}
	d := &privilegeDrop{name: name, explicit: explicit}
	if d.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, "", fmt.Errorf("%w: user %s: uid %q: %w", ErrPrivilegeDrop, name, u.Uid, err)
	}
	if d.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, "", fmt.Errorf("%w: user %s: gid %q: %w", ErrPrivilegeDrop, name, u.Gid, err)
	}
	if d.uid == 0 {
		return nil, "", nil
	}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid} // no group database: the primary group only
	}
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			d.groups = append(d.groups, n)
		}
	}
	return d, "", nil
}

// dropPrivileges makes a daemon started as root run as the configured user
// from here on, once what needs root (listeners, the control socket) is
// open. A drop the operator did not ask for (the default account) that the
// system refuses, e.g. a systemd unit without CAP_SETUID, is logged, not
// fatal.
//
// Without VPN mode it then also gives up CAP_NET_ADMIN, which a systemd
// unit may have granted (the packaged units do, for VPN mode).
func dropPrivileges(configured string, vpn bool, logger *slog.Logger) error {
	if err := dropUser(configured, vpn, logger); err != nil {
		return err
	}
	if vpn {
		return nil
	}
	dropped, err := dropNetAdmin()
	switch {
	case err != nil:
		logger.Warn("could not drop CAP_NET_ADMIN, which this daemon does not need without [vpn]", "err", err)
	case dropped:
		logger.Info("dropped CAP_NET_ADMIN: no [vpn] in the configuration")
	}
	return nil
}

func dropUser(configured string, vpn bool, logger *slog.Logger) error {
	d, why, err := planDrop(configured, vpn, os.Geteuid(), user.Lookup)
	if err != nil {
		return err
	}
	if d == nil {
		if why != "" {
			logger.Warn(why)
		}
		return nil
	}
	if err := dropTo(d); err != nil {
		if !d.explicit {
			logger.Warn("running as root: could not drop to the "+d.name+" account", "err", err)
			return nil
		}
		return fmt.Errorf("%w to %s: %w", ErrPrivilegeDrop, d.name, err)
	}
	logger.Info("dropped root privileges; reloads read files as this user, and -R listeners cannot bind ports below 1024",
		"user", d.name, "uid", d.uid, "gid", d.gid)
	return nil
}
