package osstore

import (
	"crypto"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The macOS keychain through Security.framework and CoreFoundation,
// called without cgo by purego (which dlopens the frameworks and calls
// them with the C calling convention), so that CI's CGO_ENABLED=0 cross
// builds keep working:
//
//   - SecItemCopyMatching {kSecClass: kSecClassIdentity, kSecReturnRef,
//     kSecReturnAttributes, kSecMatchLimitAll} lists the identities of the
//     keychain search list (login, then System) with their labels;
//   - SecIdentityCopyCertificate + SecCertificateCopyData give each
//     certificate;
//   - SecIdentityCopyPrivateKey + SecKeyCreateSignature sign with the
//     kSecKeyAlgorithm…Digest… algorithms (algorithm.go), the key staying
//     in the keychain.
//
// Identities on CryptoTokenKit tokens (smart cards) may need
// kSecAttrAccessGroupToken in the query to be listed; not added, since
// nothing here could try it.
//
// A CF object is a uintptr here: purego passes it as the pointer it is.

type cfRef = uintptr

const (
	securityPath       = "/System/Library/Frameworks/Security.framework/Security"
	coreFoundationPath = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"

	kCFStringEncodingUTF8 = 0x08000100
	errSecItemNotFound    = -25300
)

// sec is Security.framework and CoreFoundation, loaded once on first use.
var sec struct {
	once sync.Once
	err  error

	CFRelease                         func(cfRef)
	CFDictionaryCreate                func(alloc uintptr, keys, values *cfRef, n int, keyCB, valueCB uintptr) cfRef
	CFDictionaryGetValue              func(dict, key cfRef) cfRef
	CFArrayGetCount                   func(cfRef) int
	CFArrayGetValueAtIndex            func(cfRef, int) cfRef
	CFDataCreate                      func(alloc uintptr, b *byte, n int) cfRef
	CFDataGetLength                   func(cfRef) int
	CFDataGetBytePtr                  func(cfRef) *byte
	CFGetTypeID                       func(cfRef) uint
	CFStringGetTypeID                 func() uint
	CFArrayGetTypeID                  func() uint
	CFStringGetLength                 func(cfRef) int
	CFStringGetMaximumSizeForEncoding func(n int, enc uint32) int
	CFStringGetCString                func(s cfRef, buf *byte, size int, enc uint32) uint8
	CFErrorCopyDescription            func(cfRef) cfRef

	SecItemCopyMatching        func(query cfRef, result *cfRef) int32
	SecIdentityCopyCertificate func(identity cfRef, cert *cfRef) int32
	SecIdentityCopyPrivateKey  func(identity cfRef, key *cfRef) int32
	SecCertificateCopyData     func(cert cfRef) cfRef
	SecKeyCreateSignature      func(key, alg, data cfRef, err *cfRef) cfRef
	SecCopyErrorMessageString  func(status int32, reserved uintptr) cfRef

	// The values of exported constants (CFStringRef, CFBooleanRef), by name.
	consts map[string]cfRef
	// The addresses of kCFTypeDictionaryKeyCallBacks and …ValueCallBacks.
	keyCallBacks, valueCallBacks uintptr
}

// constNames are the exported constants used, loaded with the functions.
var constNames = []string{
	"kCFBooleanTrue",
	"kSecClass", "kSecClassIdentity", "kSecClassCertificate",
	"kSecReturnRef", "kSecReturnAttributes", "kSecReturnData",
	"kSecMatchLimit", "kSecMatchLimitAll",
	"kSecValueRef", "kSecAttrLabel",
}

func loadSecurity() error {
	sec.once.Do(func() { sec.err = doLoadSecurity() })
	return sec.err
}

func doLoadSecurity() error {
	cf, err := purego.Dlopen(coreFoundationPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return fmt.Errorf("load CoreFoundation: %w", err)
	}
	security, err := purego.Dlopen(securityPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return fmt.Errorf("load Security.framework: %w", err)
	}
	// RegisterLibFunc panics on a missing symbol; look each up first so an
	// old macOS gets an error instead.
	fn := func(lib uintptr, fptr any, name string) error {
		addr, err := purego.Dlsym(lib, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		purego.RegisterFunc(fptr, addr)
		return nil
	}
	errs := []error{
		fn(cf, &sec.CFRelease, "CFRelease"),
		fn(cf, &sec.CFDictionaryCreate, "CFDictionaryCreate"),
		fn(cf, &sec.CFDictionaryGetValue, "CFDictionaryGetValue"),
		fn(cf, &sec.CFArrayGetCount, "CFArrayGetCount"),
		fn(cf, &sec.CFArrayGetValueAtIndex, "CFArrayGetValueAtIndex"),
		fn(cf, &sec.CFDataCreate, "CFDataCreate"),
		fn(cf, &sec.CFDataGetLength, "CFDataGetLength"),
		fn(cf, &sec.CFDataGetBytePtr, "CFDataGetBytePtr"),
		fn(cf, &sec.CFGetTypeID, "CFGetTypeID"),
		fn(cf, &sec.CFStringGetTypeID, "CFStringGetTypeID"),
		fn(cf, &sec.CFArrayGetTypeID, "CFArrayGetTypeID"),
		fn(cf, &sec.CFStringGetLength, "CFStringGetLength"),
		fn(cf, &sec.CFStringGetMaximumSizeForEncoding, "CFStringGetMaximumSizeForEncoding"),
		fn(cf, &sec.CFStringGetCString, "CFStringGetCString"),
		fn(cf, &sec.CFErrorCopyDescription, "CFErrorCopyDescription"),
		fn(security, &sec.SecItemCopyMatching, "SecItemCopyMatching"),
		fn(security, &sec.SecIdentityCopyCertificate, "SecIdentityCopyCertificate"),
		fn(security, &sec.SecIdentityCopyPrivateKey, "SecIdentityCopyPrivateKey"),
		fn(security, &sec.SecCertificateCopyData, "SecCertificateCopyData"),
		fn(security, &sec.SecKeyCreateSignature, "SecKeyCreateSignature"),
		fn(security, &sec.SecCopyErrorMessageString, "SecCopyErrorMessageString"),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("Security.framework: %w", err)
	}
	sec.consts = make(map[string]cfRef)
	load := func(name string) error {
		lib := security
		if name == "kCFBooleanTrue" {
			lib = cf
		}
		addr, err := purego.Dlsym(lib, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		sec.consts[name] = deref(addr)
		return nil
	}
	for _, name := range constNames {
		errs = append(errs, load(name))
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		for _, a := range []algorithm{{hash: h}, {rsa: true, hash: h}, {rsa: true, pss: true, hash: h}} {
			errs = append(errs, load(a.secKeyAlgorithm()))
		}
	}
	var e1, e2 error
	sec.keyCallBacks, e1 = purego.Dlsym(cf, "kCFTypeDictionaryKeyCallBacks")
	sec.valueCallBacks, e2 = purego.Dlsym(cf, "kCFTypeDictionaryValueCallBacks")
	errs = append(errs, e1, e2)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("Security.framework: %w", err)
	}
	return nil
}

// deref reads the pointer-sized value at addr: an exported constant's
// value from the address dlsym gives for it.
func deref(addr uintptr) cfRef {
	return **(**cfRef)(unsafe.Pointer(&addr))
}

// osStatus turns a Security.framework OSStatus into an error with the
// framework's own message ("The user name or passphrase you entered is
// not correct.").
func osStatus(call string, st int32) error {
	msg := ""
	if s := sec.SecCopyErrorMessageString(st, 0); s != 0 {
		msg = goString(s)
		sec.CFRelease(s)
	}
	return fmt.Errorf("%s: OSStatus %d %s", call, st, msg)
}

func goString(s cfRef) string {
	if s == 0 || sec.CFGetTypeID(s) != sec.CFStringGetTypeID() {
		return ""
	}
	n := sec.CFStringGetMaximumSizeForEncoding(sec.CFStringGetLength(s), kCFStringEncodingUTF8) + 1
	buf := make([]byte, n)
	if sec.CFStringGetCString(s, &buf[0], n, kCFStringEncodingUTF8) == 0 {
		return ""
	}
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

func goBytes(d cfRef) []byte {
	n := sec.CFDataGetLength(d)
	if n == 0 {
		return nil
	}
	return append([]byte(nil), unsafe.Slice(sec.CFDataGetBytePtr(d), n)...)
}

// copyMatching runs SecItemCopyMatching for the query given as pairs of
// constant names; it returns a CFArray the caller releases, or 0 when
// nothing matched.
func copyMatching(pairs ...string) (cfRef, error) {
	keys := make([]cfRef, 0, len(pairs)/2)
	values := make([]cfRef, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		keys = append(keys, sec.consts[pairs[i]])
		values = append(values, sec.consts[pairs[i+1]])
	}
	q := sec.CFDictionaryCreate(0, &keys[0], &values[0], len(keys), sec.keyCallBacks, sec.valueCallBacks)
	if q == 0 {
		return 0, errors.New("CFDictionaryCreate failed")
	}
	defer sec.CFRelease(q)
	var res cfRef
	switch st := sec.SecItemCopyMatching(q, &res); st {
	case 0:
	case errSecItemNotFound:
		return 0, nil
	default:
		return 0, osStatus("SecItemCopyMatching", st)
	}
	if sec.CFGetTypeID(res) != sec.CFArrayGetTypeID() {
		sec.CFRelease(res)
		return 0, errors.New("SecItemCopyMatching returned no array")
	}
	return res, nil
}

// secSys is secAPI with the real calls.
type secSys struct{}

func newKeychain() (store, error) {
	if err := loadSecurity(); err != nil {
		return nil, err
	}
	return &keychain{api: secSys{}}, nil
}

func (secSys) identities() ([]secIdentity, func(), error) {
	arr, err := copyMatching(
		"kSecClass", "kSecClassIdentity",
		"kSecReturnRef", "kCFBooleanTrue",
		"kSecReturnAttributes", "kCFBooleanTrue",
		"kSecMatchLimit", "kSecMatchLimitAll")
	if err != nil || arr == 0 {
		return nil, func() {}, err
	}
	done := func() { sec.CFRelease(arr) }
	var out []secIdentity
	for i := range sec.CFArrayGetCount(arr) {
		attrs := sec.CFArrayGetValueAtIndex(arr, i)
		id := sec.CFDictionaryGetValue(attrs, sec.consts["kSecValueRef"])
		if id == 0 {
			continue
		}
		var cert cfRef
		if st := sec.SecIdentityCopyCertificate(id, &cert); st != 0 {
			done()
			return nil, nil, osStatus("SecIdentityCopyCertificate", st)
		}
		data := sec.SecCertificateCopyData(cert)
		sec.CFRelease(cert)
		if data == 0 {
			continue
		}
		der := goBytes(data)
		sec.CFRelease(data)
		out = append(out, secIdentity{
			der:   der,
			label: goString(sec.CFDictionaryGetValue(attrs, sec.consts["kSecAttrLabel"])),
			ref:   id,
		})
	}
	return out, done, nil
}

func (secSys) certificates() ([][]byte, error) {
	arr, err := copyMatching(
		"kSecClass", "kSecClassCertificate",
		"kSecReturnData", "kCFBooleanTrue",
		"kSecMatchLimit", "kSecMatchLimitAll")
	if err != nil || arr == 0 {
		return nil, err
	}
	defer sec.CFRelease(arr)
	var out [][]byte
	for i := range sec.CFArrayGetCount(arr) {
		out = append(out, goBytes(sec.CFArrayGetValueAtIndex(arr, i)))
	}
	return out, nil
}

func (secSys) copyPrivateKey(id uintptr) (uintptr, error) {
	var key cfRef
	if st := sec.SecIdentityCopyPrivateKey(id, &key); st != 0 {
		return 0, osStatus("SecIdentityCopyPrivateKey", st)
	}
	return key, nil
}

func (secSys) createSignature(key uintptr, alg string, digest []byte) ([]byte, error) {
	algRef, ok := sec.consts[alg]
	if !ok {
		return nil, fmt.Errorf("algorithm %s not loaded", alg)
	}
	data := sec.CFDataCreate(0, &digest[0], len(digest))
	if data == 0 {
		return nil, errors.New("CFDataCreate failed")
	}
	defer sec.CFRelease(data)
	var cfErr cfRef
	sig := sec.SecKeyCreateSignature(key, algRef, data, &cfErr)
	if sig == 0 {
		msg := "no reason given"
		if cfErr != 0 {
			if d := sec.CFErrorCopyDescription(cfErr); d != 0 {
				msg = goString(d)
				sec.CFRelease(d)
			}
			sec.CFRelease(cfErr)
		}
		return nil, errors.New(msg)
	}
	defer sec.CFRelease(sig)
	return goBytes(sig), nil
}

func (secSys) release(ref uintptr) { sec.CFRelease(ref) }
