package osstore

// platformKind: the certificate store is Windows's.
const platformKind = CertStore

func platformStore(r Ref) (store, error) {
	if r.Kind != CertStore {
		return nil, wrongOS(r)
	}
	return newCertStore(r.Location, r.Store)
}
