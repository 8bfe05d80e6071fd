package osstore

// platformKind: the keychain is macOS's.
const platformKind = Keychain

func platformStore(r Ref) (store, error) {
	if r.Kind != Keychain {
		return nil, wrongOS(r)
	}
	return newKeychain()
}
