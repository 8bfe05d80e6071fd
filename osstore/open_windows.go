package osstore

// platformStore: the certificate store is Windows's.
func platformStore(r Ref) (store, error) {
	if r.Kind != CertStore {
		return nil, wrongOS(r)
	}
	return newCertStore(r.Location, r.Store)
}
