//go:build !linux && !darwin && !windows

package tun

func newPlatform(*configurator) (platform, error) {
	return nil, ErrUnsupported
}
