//go:build !darwin && !windows

package osstore

// platformStore: neither store exists on this OS.
func platformStore(r Ref) (store, error) { return nil, wrongOS(r) }
