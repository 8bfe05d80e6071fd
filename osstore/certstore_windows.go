package osstore

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// winSys is winAPI with the real calls: crypt32 through
// golang.org/x/sys/windows, and the calls it lacks
// (CertGetCertificateContextProperty, ncrypt) through LazyDLL.
//
// github.com/google/certtostore was considered: it selects certificates by
// issuer or a subject substring rather than by name or thumbprint, pulls
// in go-ole, wmi and a logging package, and splits CNG's ECDSA signature
// by the digest's length instead of the curve's, which breaks a P-384 key
// asked for a SHA-256 signature (TLS 1.2 does that). What is needed here
// is a few calls.
type winSys struct{}

func newCertStore(loc Location, name string) (store, error) {
	s, err := newWinStore(winSys{}, loc, name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

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
	certKeyProvInfoPropID  = 2  // CERT_KEY_PROV_INFO_PROP_ID
	certFriendlyNamePropID = 11 // CERT_FRIENDLY_NAME_PROP_ID
)

func (winSys) openStore(l Location, name string) (uintptr, error) {
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
	h, err := windows.CertOpenStore(windows.CERT_STORE_PROV_SYSTEM, 0, 0, flags, uintptr(unsafe.Pointer(n)))
	return uintptr(h), err
}

func (winSys) closeStore(h uintptr) error { return windows.CertCloseStore(windows.Handle(h), 0) }

func (winSys) certs(h uintptr) ([]winCert, error) {
	var out []winCert
	var ctx *windows.CertContext
	for {
		next, err := windows.CertEnumCertificatesInStore(windows.Handle(h), ctx)
		if next == nil {
			// The end: CRYPT_E_NOT_FOUND, or ERROR_NO_MORE_FILES from a
			// collection store.
			if err == nil || errors.Is(err, windows.Errno(windows.CRYPT_E_NOT_FOUND)) || errors.Is(err, windows.ERROR_NO_MORE_FILES) {
				return out, nil
			}
			for _, c := range out {
				windows.CertFreeCertificateContext(c.ctx.(*windows.CertContext))
			}
			return nil, err
		}
		ctx = next // freed by the next CertEnumCertificatesInStore
		_, hasKey := property(ctx, certKeyProvInfoPropID)
		out = append(out, winCert{
			der:          append([]byte(nil), unsafe.Slice(ctx.EncodedCert, ctx.Length)...),
			friendlyName: friendlyName(ctx),
			hasKey:       hasKey,
			ctx:          windows.CertDuplicateCertificateContext(ctx),
		})
	}
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

func (winSys) dupCert(ctx any) any {
	return windows.CertDuplicateCertificateContext(ctx.(*windows.CertContext))
}

func (winSys) freeCert(ctx any) { windows.CertFreeCertificateContext(ctx.(*windows.CertContext)) }

func (winSys) acquireKey(ctx any) (uintptr, uint32, bool, error) {
	var (
		h        windows.Handle
		spec     uint32
		mustFree bool
	)
	// Silent: a daemon must not wait on a dialog nobody sees; a key that
	// needs one (a smart card PIN not cached) fails here with the reason.
	err := windows.CryptAcquireCertificatePrivateKey(ctx.(*windows.CertContext),
		windows.CRYPT_ACQUIRE_PREFER_NCRYPT_KEY_FLAG|windows.CRYPT_ACQUIRE_SILENT_FLAG,
		nil, &h, &spec, &mustFree)
	return uintptr(h), spec, mustFree, err
}

func (winSys) translate(prov uintptr, spec uint32) (uintptr, error) {
	var ksp, kh uintptr
	r, _, _ := procNCryptTranslateHandle.Call(uintptr(unsafe.Pointer(&ksp)), uintptr(unsafe.Pointer(&kh)), prov, 0, uintptr(spec), 0)
	if uint32(r) != 0 {
		return 0, fmt.Errorf("NCryptTranslateHandle: %w", securityStatus(r))
	}
	if ksp != 0 {
		procNCryptFreeObject.Call(ksp)
	}
	return kh, nil
}

func (winSys) releaseProv(prov uintptr) { windows.CryptReleaseContext(windows.Handle(prov), 0) }

// BCRYPT_PKCS1_PADDING_INFO and BCRYPT_PSS_PADDING_INFO.
type pkcs1PaddingInfo struct {
	alg *uint16
}

type pssPaddingInfo struct {
	alg  *uint16
	salt uint32
}

func (winSys) signHash(key uintptr, flags uint32, hashAlg string, salt uint32, digest []byte) ([]byte, error) {
	var info unsafe.Pointer
	switch flags {
	case bcryptPadPKCS1, bcryptPadPSS:
		name, err := windows.UTF16PtrFromString(hashAlg)
		if err != nil {
			return nil, err
		}
		if flags == bcryptPadPSS {
			info = unsafe.Pointer(&pssPaddingInfo{alg: name, salt: salt})
		} else {
			info = unsafe.Pointer(&pkcs1PaddingInfo{alg: name})
		}
	}
	var size uint32
	// First the size, then the signature.
	r, _, _ := procNCryptSignHash.Call(key, uintptr(info),
		uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		0, 0, uintptr(unsafe.Pointer(&size)), uintptr(flags))
	if uint32(r) != 0 {
		return nil, securityStatus(r)
	}
	sig := make([]byte, size)
	r, _, _ = procNCryptSignHash.Call(key, uintptr(info),
		uintptr(unsafe.Pointer(&digest[0])), uintptr(len(digest)),
		uintptr(unsafe.Pointer(&sig[0])), uintptr(size), uintptr(unsafe.Pointer(&size)), uintptr(flags))
	runtime.KeepAlive(info)
	if uint32(r) != 0 {
		return nil, securityStatus(r)
	}
	return sig[:size], nil
}

func (winSys) freeKey(key uintptr) error {
	if r, _, _ := procNCryptFreeObject.Call(key); uint32(r) != 0 {
		return fmt.Errorf("NCryptFreeObject: %w", securityStatus(r))
	}
	return nil
}

// securityStatus turns an NCrypt SECURITY_STATUS (an HRESULT such as
// NTE_BAD_KEYSET or SCARD_W_REMOVED_CARD) into an error with Windows's
// own message.
func securityStatus(r uintptr) error {
	e := windows.Errno(uint32(r))
	return fmt.Errorf("0x%08X %s", uint32(r), strings.TrimSpace(e.Error()))
}
