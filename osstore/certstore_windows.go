package osstore

import (
	"crypto"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The Windows certificate store through crypt32 (enumerate a system
// store, read a certificate's properties, acquire its private key) and
// CNG's ncrypt (sign). golang.org/x/sys/windows has most of crypt32; the
// two calls it lacks are loaded here.
//
// github.com/google/certtostore was considered: it selects certificates by
// issuer or a subject substring rather than by name or thumbprint, pulls
// in go-ole, wmi and a logging package, and splits CNG's ECDSA signature
// by the digest's length instead of the curve's, which breaks a P-384 key
// asked for a SHA-256 signature. What is needed here is a few calls.

var (
	crypt32                               = windows.NewLazySystemDLL("crypt32.dll")
	procCertGetCertificateContextProperty = crypt32.NewProc("CertGetCertificateContextProperty")
	ncrypt                                = windows.NewLazySystemDLL("ncrypt.dll")
	procNCryptSignHash                    = ncrypt.NewProc("NCryptSignHash")
	procNCryptFreeObject                  = ncrypt.NewProc("NCryptFreeObject")
	procNCryptTranslateHandle             = ncrypt.NewProc("NCryptTranslateHandle")
)

// Certificate context property IDs (wincrypt.h).
const (
	certKeyProvInfoPropID  = 2  // CERT_KEY_PROV_INFO_PROP_ID: a private key is associated
	certFriendlyNamePropID = 11 // CERT_FRIENDLY_NAME_PROP_ID
)

// winStore is one or two opened system stores (the user's and the
// machine's) of the same name.
type winStore struct {
	stores []winSystemStore
	name   string
	loc    Location
	kept   []*windows.CertContext // duplicated for candidates; freed by close
}

type winSystemStore struct {
	loc   Location
	where string // "user/MY"
	h     windows.Handle
}

func newCertStore(loc Location, name string) (store, error) {
	s := &winStore{name: name, loc: loc}
	var errs []error
	for _, l := range locations(loc) {
		h, err := openSystemStore(l, name)
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

// openSystemStore opens a system store read-only; it never creates one.
func openSystemStore(l Location, name string) (windows.Handle, error) {
	flags := uint32(windows.CERT_STORE_READONLY_FLAG | windows.CERT_STORE_OPEN_EXISTING_FLAG)
	if l == LocalMachine {
		flags |= windows.CERT_SYSTEM_STORE_LOCAL_MACHINE
	} else {
		flags |= windows.CERT_SYSTEM_STORE_CURRENT_USER
	}
	n, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return 0, err
	}
	return windows.CertOpenStore(windows.CERT_STORE_PROV_SYSTEM, 0, 0, flags, uintptr(unsafe.Pointer(n)))
}

// each calls f with every certificate of h. The context passed to f is
// valid only during the call (the next enumeration step frees it).
func each(h windows.Handle, f func(*windows.CertContext)) error {
	var ctx *windows.CertContext
	for {
		next, err := windows.CertEnumCertificatesInStore(h, ctx)
		if next == nil {
			// The end: CRYPT_E_NOT_FOUND, or ERROR_NO_MORE_FILES from a
			// collection store.
			if err == nil || errors.Is(err, windows.Errno(windows.CRYPT_E_NOT_FOUND)) || errors.Is(err, windows.ERROR_NO_MORE_FILES) {
				return nil
			}
			return err
		}
		ctx = next
		f(ctx)
	}
}

func der(ctx *windows.CertContext) []byte {
	return append([]byte(nil), unsafe.Slice(ctx.EncodedCert, ctx.Length)...)
}

// property reads a certificate context property; ok is false when the
// certificate does not have it.
func property(ctx *windows.CertContext, id uint32) (buf []byte, ok bool) {
	var size uint32
	r, _, _ := procCertGetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), uintptr(id), 0, uintptr(unsafe.Pointer(&size)))
	if r == 0 {
		return nil, false
	}
	if size == 0 {
		return nil, true
	}
	buf = make([]byte, size)
	r, _, _ = procCertGetCertificateContextProperty.Call(uintptr(unsafe.Pointer(ctx)), uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)))
	if r == 0 {
		return nil, false
	}
	return buf[:size], true
}

func friendlyName(ctx *windows.CertContext) string {
	b, ok := property(ctx, certFriendlyNamePropID)
	if !ok || len(b) < 2 {
		return ""
	}
	return windows.UTF16ToString(unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2))
}

func (s *winStore) identities() ([]candidate, error) {
	var out []candidate
	for _, st := range s.stores {
		err := each(st.h, func(ctx *windows.CertContext) {
			_, hasKey := property(ctx, certKeyProvInfoPropID)
			kept := windows.CertDuplicateCertificateContext(ctx)
			s.kept = append(s.kept, kept)
			out = append(out, candidate{
				der:    der(ctx),
				label:  friendlyName(ctx),
				where:  st.where,
				hasKey: hasKey,
				handle: kept,
			})
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", st.where, err)
		}
	}
	return out, nil
}

// certificates returns the certificates of the intermediate CA store
// ("CA") of the same locations and of the identity's store itself.
func (s *winStore) certificates() ([][]byte, error) {
	var out [][]byte
	collect := func(ctx *windows.CertContext) { out = append(out, der(ctx)) }
	var errs []error
	for _, st := range s.stores {
		errs = append(errs, each(st.h, collect))
		h, err := openSystemStore(st.loc, "CA")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, each(h, collect))
		windows.CertCloseStore(h, 0)
	}
	return out, errors.Join(errs...)
}

func (s *winStore) openKey(c *candidate, pub crypto.PublicKey) (osKey, error) {
	ctx, ok := c.handle.(*windows.CertContext)
	if !ok || ctx == nil {
		return nil, errors.New("no certificate context")
	}
	var (
		h        windows.Handle
		spec     uint32
		mustFree bool
	)
	// Silent: a daemon must not wait on a dialog nobody sees; a key that
	// needs one (a smart card PIN not cached) fails here with CNG's
	// reason. CNG keys are preferred; a CryptoAPI key (an RSA key a .p12
	// import put in a legacy CSP) is translated to CNG below, so that
	// NCryptSignHash is the one signing path.
	err := windows.CryptAcquireCertificatePrivateKey(ctx,
		windows.CRYPT_ACQUIRE_PREFER_NCRYPT_KEY_FLAG|windows.CRYPT_ACQUIRE_SILENT_FLAG,
		nil, &h, &spec, &mustFree)
	if err != nil {
		return nil, fmt.Errorf("CryptAcquireCertificatePrivateKey: %w", err)
	}
	// The context is kept with the key: when mustFree is false the handle
	// belongs to it.
	keep := windows.CertDuplicateCertificateContext(ctx)
	if spec == windows.CERT_NCRYPT_KEY_SPEC {
		return &cngKey{h: h, owned: mustFree, ctx: keep}, nil
	}
	kh, err := translateLegacy(h, spec)
	if mustFree {
		windows.CryptReleaseContext(h, 0)
	}
	if err != nil {
		windows.CertFreeCertificateContext(keep)
		return nil, err
	}
	return &cngKey{h: kh, owned: true, ctx: keep}, nil
}

// translateLegacy opens a CryptoAPI key (provider handle prov, key spec
// AT_KEYEXCHANGE or AT_SIGNATURE) as a CNG key with NCryptTranslateHandle,
// which the Microsoft software CSPs support.
func translateLegacy(prov windows.Handle, spec uint32) (windows.Handle, error) {
	var ksp, kh windows.Handle
	r, _, _ := procNCryptTranslateHandle.Call(uintptr(unsafe.Pointer(&ksp)), uintptr(unsafe.Pointer(&kh)),
		uintptr(prov), 0, uintptr(spec), 0)
	if uint32(r) != 0 {
		return 0, fmt.Errorf("CryptoAPI key (key spec %d) cannot be used through CNG: NCryptTranslateHandle: %w", spec, securityStatus(r))
	}
	if ksp != 0 {
		procNCryptFreeObject.Call(uintptr(ksp))
	}
	return kh, nil
}

func (s *winStore) close() error {
	for _, c := range s.kept {
		windows.CertFreeCertificateContext(c)
	}
	s.kept = nil
	var errs []error
	for _, st := range s.stores {
		if err := windows.CertCloseStore(st.h, 0); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.where, err))
		}
	}
	s.stores = nil
	return errors.Join(errs...)
}

// cngKey is an NCRYPT_KEY_HANDLE; CNG allows it to be used from several
// threads at once.
type cngKey struct {
	h     windows.Handle
	owned bool // we free h (else it belongs to ctx)
	ctx   *windows.CertContext
}

// BCRYPT_PKCS1_PADDING_INFO and BCRYPT_PSS_PADDING_INFO.
type pkcs1PaddingInfo struct {
	alg *uint16
}

type pssPaddingInfo struct {
	alg  *uint16
	salt uint32
}

func (k *cngKey) sign(alg algorithm, digest []byte) ([]byte, error) {
	flags, hashName, salt := alg.ncrypt()
	var info unsafe.Pointer
	if alg.rsa {
		name, err := windows.UTF16PtrFromString(hashName)
		if err != nil {
			return nil, err
		}
		if alg.pss {
			info = unsafe.Pointer(&pssPaddingInfo{alg: name, salt: salt})
		} else {
			info = unsafe.Pointer(&pkcs1PaddingInfo{alg: name})
		}
	}
	var size uint32
	// First the size, then the signature.
	r, _, _ := procNCryptSignHash.Call(uintptr(k.h), uintptr(info),
		uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		0, 0, uintptr(unsafe.Pointer(&size)), uintptr(flags))
	if uint32(r) != 0 {
		return nil, fmt.Errorf("NCryptSignHash (%s): %w", alg, securityStatus(r))
	}
	sig := make([]byte, size)
	r, _, _ = procNCryptSignHash.Call(uintptr(k.h), uintptr(info),
		uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		uintptr(unsafe.Pointer(&sig[0])), uintptr(size), uintptr(unsafe.Pointer(&size)), uintptr(flags))
	runtime.KeepAlive(info)
	if uint32(r) != 0 {
		return nil, fmt.Errorf("NCryptSignHash (%s): %w", alg, securityStatus(r))
	}
	sig = sig[:size]
	if !alg.rsa {
		return ecdsaRawToDER(sig)
	}
	return sig, nil
}

// securityStatus turns an NCrypt SECURITY_STATUS (an HRESULT such as
// NTE_BAD_KEYSET or SCARD_W_REMOVED_CARD) into an error with Windows's
// own message.
func securityStatus(r uintptr) error {
	e := windows.Errno(uint32(r))
	return fmt.Errorf("0x%08X %s", uint32(r), strings.TrimSpace(e.Error()))
}

func (k *cngKey) close() error {
	var err error
	if k.owned {
		if r, _, _ := procNCryptFreeObject.Call(uintptr(k.h)); uint32(r) != 0 {
			err = fmt.Errorf("NCryptFreeObject: %w", securityStatus(r))
		}
	}
	windows.CertFreeCertificateContext(k.ctx)
	return err
}
