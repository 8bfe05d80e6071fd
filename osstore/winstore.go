package osstore

import (
	"crypto"
	"errors"
	"fmt"
)

// The Windows certificate store backend, written against winAPI, the
// crypt32/ncrypt calls it makes, so that it compiles and is tested on
// every OS; certstore_windows.go implements winAPI with the real calls
// (and is all that is Windows-only).

// certNCryptKeySpec is CERT_NCRYPT_KEY_SPEC: CryptAcquireCertificatePrivateKey
// returned a CNG key handle (other values are CryptoAPI key specs,
// AT_KEYEXCHANGE or AT_SIGNATURE, with a provider handle).
const certNCryptKeySpec = 0xFFFFFFFF

// winCert is one certificate a store enumeration gave.
type winCert struct {
	der          []byte
	friendlyName string // CERT_FRIENDLY_NAME_PROP_ID, "" if none
	hasKey       bool   // CERT_KEY_PROV_INFO_PROP_ID present: a private key is associated
	ctx          any    // a PCCERT_CONTEXT the caller frees with freeCert
}

// winAPI is what the backend needs from crypt32 and ncrypt. Handles are
// the OS's; the backend frees everything it is given.
type winAPI interface {
	// openStore opens a system store (CertOpenStore, read-only, existing
	// only) of the current user or the machine.
	openStore(loc Location, name string) (uintptr, error)
	// certs enumerates a store (CertEnumCertificatesInStore), each
	// context duplicated for the caller.
	certs(store uintptr) ([]winCert, error)
	closeStore(store uintptr) error
	dupCert(ctx any) any
	freeCert(ctx any)
	// acquireKey is CryptAcquireCertificatePrivateKey, silent, preferring
	// CNG: spec is certNCryptKeySpec for a CNG key handle, else h is a
	// CryptoAPI provider.
	acquireKey(ctx any) (h uintptr, spec uint32, mustFree bool, err error)
	// translate opens a CryptoAPI key as a CNG one (NCryptTranslateHandle).
	translate(prov uintptr, spec uint32) (uintptr, error)
	releaseProv(prov uintptr)
	// signHash is NCryptSignHash: flags 0 (ECDSA) or BCRYPT_PAD_PKCS1 /
	// BCRYPT_PAD_PSS with the hash's CNG name and the PSS salt length. It
	// returns the signature as CNG gives it (ECDSA: r||s).
	signHash(key uintptr, flags uint32, hashAlg string, salt uint32, digest []byte) ([]byte, error)
	freeKey(key uintptr) error
}

// winStore is one or two opened system stores (the user's and the
// machine's) of the same name.
type winStore struct {
	api    winAPI
	stores []winSystemStore
	kept   []any // contexts of candidates; freed by close
}

type winSystemStore struct {
	loc   Location
	where string // "user/MY"
	h     uintptr
}

func newWinStore(api winAPI, loc Location, name string) (*winStore, error) {
	s := &winStore{api: api}
	var errs []error
	for _, l := range locations(loc) {
		h, err := api.openStore(l, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s/%s: %w", l, name, err))
			continue
		}
		s.stores = append(s.stores, winSystemStore{loc: l, where: l.String() + "/" + name, h: h})
	}
	// With no location named, one of the two may be missing (a store name
	// only one of them has); only both failing is an error.
	if len(s.stores) == 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func locations(loc Location) []Location {
	if loc == AnyLocation {
		return []Location{CurrentUser, LocalMachine}
	}
	return []Location{loc}
}

func (s *winStore) identities() ([]candidate, error) {
	var out []candidate
	for _, st := range s.stores {
		certs, err := s.api.certs(st.h)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.where, err)
		}
		for _, c := range certs {
			s.kept = append(s.kept, c.ctx)
			out = append(out, candidate{der: c.der, label: c.friendlyName, where: st.where, hasKey: c.hasKey, handle: c.ctx})
		}
	}
	return out, nil
}

// certificates returns the certificates of the intermediate CA store
// ("CA") of the same locations and of the identity's store itself.
func (s *winStore) certificates() ([][]byte, error) {
	var out [][]byte
	var errs []error
	collect := func(h uintptr) {
		certs, err := s.api.certs(h)
		errs = append(errs, err)
		for _, c := range certs {
			out = append(out, c.der)
			s.api.freeCert(c.ctx)
		}
	}
	for _, st := range s.stores {
		collect(st.h)
		h, err := s.api.openStore(st.loc, "CA")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		collect(h)
		errs = append(errs, s.api.closeStore(h))
	}
	return out, errors.Join(errs...)
}

func (s *winStore) openKey(c *candidate, _ crypto.PublicKey) (osKey, error) {
	h, spec, mustFree, err := s.api.acquireKey(c.handle)
	if err != nil {
		return nil, fmt.Errorf("CryptAcquireCertificatePrivateKey: %w", err)
	}
	// The context is kept with the key: when mustFree is false the handle
	// belongs to it.
	keep := s.api.dupCert(c.handle)
	if spec == certNCryptKeySpec {
		return &cngKey{api: s.api, h: h, owned: mustFree, ctx: keep}, nil
	}
	// A CryptoAPI key (an RSA key a .p12 import put in a legacy CSP):
	// opened through CNG, so that NCryptSignHash is the one signing path.
	kh, err := s.api.translate(h, spec)
	if mustFree {
		s.api.releaseProv(h)
	}
	if err != nil {
		s.api.freeCert(keep)
		return nil, fmt.Errorf("CryptoAPI key (key spec %d) cannot be used through CNG: %w", spec, err)
	}
	return &cngKey{api: s.api, h: kh, owned: true, ctx: keep}, nil
}

func (s *winStore) close() error {
	for _, c := range s.kept {
		s.api.freeCert(c)
	}
	s.kept = nil
	var errs []error
	for _, st := range s.stores {
		if err := s.api.closeStore(st.h); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.where, err))
		}
	}
	s.stores = nil
	return errors.Join(errs...)
}

// cngKey is an NCRYPT_KEY_HANDLE; CNG allows it to be used from several
// threads at once.
type cngKey struct {
	api   winAPI
	h     uintptr
	owned bool // we free h (else it belongs to ctx)
	ctx   any
}

func (k *cngKey) sign(alg algorithm, digest []byte) ([]byte, error) {
	flags, hashName, salt := alg.ncrypt()
	sig, err := k.api.signHash(k.h, flags, hashName, salt, digest)
	if err != nil {
		return nil, fmt.Errorf("NCryptSignHash (%s): %w", alg, err)
	}
	if !alg.rsa {
		return ecdsaRawToDER(sig)
	}
	return sig, nil
}

func (k *cngKey) close() error {
	var err error
	if k.owned {
		err = k.api.freeKey(k.h)
	}
	k.api.freeCert(k.ctx)
	return err
}
