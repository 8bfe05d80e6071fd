//go:build !linux

package daemon

// dropNetAdmin has nothing to do where CAP_NET_ADMIN does not exist.
func dropNetAdmin() (bool, error) { return false, nil }
