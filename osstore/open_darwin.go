package osstore

// platformStore: the keychain is macOS's.
func platformStore(r Ref) (store, error) {
	if r.Kind != Keychain {
		return nil, wrongOS(r)
	}
	return newKeychain()
}
