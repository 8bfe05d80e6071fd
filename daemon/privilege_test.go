package daemon

import (
	"errors"
	"os/user"
	"testing"
)

// TestPlanDrop: whom a daemon started as root becomes after start. Not
// root: nobody. VPN mode and user = "root": stays root. user unset: the
// twoway account if it exists, else root with a warning. user set: that
// account, and an unknown one is an error.
func TestPlanDrop(t *testing.T) {
	accounts := map[string]*user.User{
		"twoway": {Username: "twoway", Uid: "998", Gid: "997"},
		"svc":    {Username: "svc", Uid: "1500", Gid: "1500"},
		"root":   {Username: "root", Uid: "0", Gid: "0"},
	}
	lookupWith := func(names ...string) func(string) (*user.User, error) {
		return func(n string) (*user.User, error) {
			for _, m := range names {
				if m == n {
					return accounts[n], nil
				}
			}
			return nil, user.UnknownUserError(n)
		}
	}
	all := lookupWith("twoway", "svc", "root")
	for _, tc := range []struct {
		name       string
		configured string
		vpn        bool
		euid       int
		lookup     func(string) (*user.User, error)
		wantUID    int // -1: no drop
		wantWhy    bool
		wantErr    error
	}{
		{"not root", "svc", false, 1000, all, -1, false, nil},
		{"explicit user", "svc", false, 0, all, 1500, false, nil},
		{"default account", "", false, 0, all, 998, false, nil},
		{"no default account", "", false, 0, lookupWith("svc"), -1, true, nil},
		{"unknown explicit user", "ghost", false, 0, all, -1, false, ErrPrivilegeDrop},
		{"user root", "root", false, 0, all, -1, false, nil},
		{"vpn keeps root", "", true, 0, all, -1, true, nil},
	} {
		d, why, err := planDrop(tc.configured, tc.vpn, tc.euid, tc.lookup)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
			continue
		}
		got := -1
		if d != nil {
			got = d.uid
		}
		if got != tc.wantUID || (why != "") != tc.wantWhy {
			t.Errorf("%s: uid %d, why %q; want uid %d, a reason: %v", tc.name, got, why, tc.wantUID, tc.wantWhy)
		}
		if d != nil && d.explicit != (tc.configured != "") {
			t.Errorf("%s: explicit = %v", tc.name, d.explicit)
		}
	}
}
