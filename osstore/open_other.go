//go:build !darwin && !windows

package osstore

// platformKind: neither store exists on this OS.
const platformKind Kind = 0

func platformStore(r Ref) (store, error) { return nil, wrongOS(r) }
