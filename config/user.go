package config

import "regexp"

// DefaultUser is the account a daemon started as root drops to when
// `user` is not set and the account exists (the packages create it).
const DefaultUser = "twoway"

// UserRoot is the `user` value that keeps a daemon started as root
// running as root.
const UserRoot = "root"

// userRE is the portable POSIX account name (useradd's default rule).
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// RunAs returns whom a daemon started as root should become once its
// listeners are open, and whether that was set explicitly. "" means stay
// root: VPN mode adds routes and NAT per session and undoes its setup at
// stop, which needs CAP_NET_ADMIN (and root for /proc/sys and
// resolv.conf) until the end.
func RunAs(user string, vpn bool) (name string, explicit bool) {
	switch {
	case vpn || user == UserRoot:
		return "", user != ""
	case user == "":
		return DefaultUser, false
	}
	return user, true
}

func validateUser(src *source, user string, vpn bool) error {
	if user == "" || user == UserRoot {
		return nil
	}
	if !userRE.MatchString(user) {
		return src.errf("user", "%q: not a valid account name", user)
	}
	if vpn {
		return src.errf("user", "%q: VPN mode keeps root (it changes routes, NAT and DNS while it runs and undoes them at stop); remove user, or set it to %q", user, UserRoot)
	}
	return nil
}
