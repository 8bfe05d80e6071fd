package tpmkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Errors callers may branch on. Every error from this package names the
// reference; none holds the auth value.
var (
	// ErrUnsupported is returned by Open and Generate on operating
	// systems other than Linux.
	ErrUnsupported = errors.New("TPM keys are supported on Linux only")
	// ErrUnavailable wraps a failure because the TPM or the key went away:
	// the device or socket cannot be opened or stopped answering, or the
	// persistent handle was evicted. The next Sign tries again, so a
	// caller may retry later.
	ErrUnavailable = errors.New("TPM key unavailable")
	// ErrClosed is returned by Sign after Close.
	ErrClosed = errors.New("TPM key closed")
	// ErrInsecurePermissions is returned when a key file or PIN file is
	// readable by group or others.
	ErrInsecurePermissions = errors.New("file is readable by group/others")
	// ErrBadPIN is returned by Sign when the TPM refused the auth value
	// from pin-source. The Key then refuses to sign without asking the
	// TPM again: each wrong try counts towards the TPM's dictionary-attack
	// lockout, which would lock every protected key, so a retrying client
	// must not keep trying. Fix the PIN file and open the key again.
	ErrBadPIN = errors.New("the TPM refused the key's auth value (pin-source)")
	// ErrExists is returned by Generate when the key file or persistent
	// handle is already taken: Generate never replaces a key.
	ErrExists = errors.New("key already exists")
)

// srkHandle is where the TCG provisioning guidance puts a persistent SRK.
const srkHandle tpm2.TPMHandle = 0x81000001

// Key is an ECDSA P-256 private key in a TPM. It implements crypto.Signer
// (Sign takes a SHA-256 digest and returns an ASN.1 ECDSA signature, as
// crypto/tls and crypto/x509 expect) and io.Closer.
//
// Sign and Close are safe for concurrent use; TPM commands are serialized
// on one connection. If a command fails because the TPM went away, the
// connection is dropped and the next Sign reopens the device and reloads the
// key, checking that it is still the same public key.
type Key struct {
	ref  Ref
	pub  *ecdsa.PublicKey
	auth []byte // the key's auth value; never logged or put in an error

	mu     sync.Mutex          // guards the fields below
	tpm    transport.TPMCloser // nil while disconnected
	handle tpm2.TPMHandle      // the key in the TPM while connected
	name   tpm2.TPM2BName
	flush  bool               // handle is a transient object this Key loaded
	scheme tpm2.TPMTSigScheme // NULL: the key's own; else ECDSA-SHA256
	badPIN error              // set once the TPM refused the auth value
	closed bool
}

// Open opens the key a reference names (see Parse): it opens the TPM, loads
// the key (blob=) or finds it (handle=), and checks it is an ECDSA P-256
// signing key. The caller must Close the key.
func Open(ref string) (*Key, error) {
	r, err := Parse(ref)
	if err != nil {
		return nil, err
	}
	return r.Open()
}

// Open is Open for a parsed reference (from ParseIn, say).
func (r Ref) Open() (*Key, error) {
	if !supported {
		return nil, fmt.Errorf("tpm key %s: %w", r, ErrUnsupported)
	}
	auth, err := readPIN(r)
	if err != nil {
		return nil, err
	}
	k := &Key{ref: r, auth: auth}
	if err := k.connect(); err != nil {
		return nil, k.wrap("open", err)
	}
	return k, nil
}

// Public returns the key's *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Ref returns the reference of the key, in canonical form.
func (k *Key) Ref() string { return k.ref.String() }

// Sign signs a SHA-256 digest with TPM2_Sign and returns the signature in
// ASN.1 DER form. rand is not used: the TPM makes its own nonce.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, fmt.Errorf("tpm key %s: sign: only SHA-256 digests are supported (got %v, %d bytes)", k.ref, opts.HashFunc(), len(digest))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("tpm key %s: %w", k.ref, ErrClosed)
	}
	if k.badPIN != nil {
		return nil, k.badPIN
	}
	rsp, transient, err := k.sign(digest)
	if err != nil && transient && staleHandle(err) {
		// The TPM lost the key we loaded, though it answers: it was
		// reset (hibernation, a restarted swtpm), which flushes
		// transient objects, or the resource manager lost our context.
		// Reload it from the file once rather than fail a handshake.
		rsp, _, err = k.sign(digest)
	}
	if err != nil {
		if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
			k.badPIN = fmt.Errorf("tpm key %s: sign: %w: %w", k.ref, ErrBadPIN, err)
			return nil, k.badPIN
		}
		return nil, err
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm key %s: sign: %w", k.ref, err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
}

// sign runs TPM2_Sign, connecting first if need be, and tells whether the
// key was one this Key loaded (a transient object). On failure it
// disconnects, so that the next try starts afresh. Called with mu held.
func (k *Key) sign(digest []byte) (rsp *tpm2.SignResponse, transient bool, err error) {
	if k.tpm == nil {
		if err := k.connect(); err != nil {
			return nil, false, k.wrap("reopen", err)
		}
	}
	transient = k.flush
	rsp, err = tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(k.auth)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme:  k.scheme,
		// A NULL ticket: the key is not restricted, so the TPM signs
		// digests it did not compute itself.
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.tpm)
	if err != nil {
		k.disconnect()
		return nil, transient, k.wrap("sign", err)
	}
	return rsp, transient, nil
}

// staleHandle tells a TPM that answered but no longer has the object.
func staleHandle(err error) bool {
	return errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0)
}

// Close flushes the key from the TPM if this Key loaded it and closes the
// TPM. It is idempotent; Sign fails with ErrClosed afterwards.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return k.disconnect()
}

// wrap names the reference and marks a vanished TPM or key ErrUnavailable.
func (k *Key) wrap(op string, err error) error {
	switch {
	case errors.Is(err, ErrUnavailable):
		// Marked by the transport; the message already says so.
	case unavailable(err):
		return fmt.Errorf("tpm key %s: %s: %w: the key is not in the TPM (evicted, or the TPM was cleared?): %w", k.ref, op, ErrUnavailable, err)
	}
	return fmt.Errorf("tpm key %s: %s: %w", k.ref, op, err)
}

// unavailable tells a TPM or key that went away from a TPM that refused:
// transport errors are marked by marked; a missing object is a handle error.
func unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0)
}

var (
	errNotSigningKey = errors.New("not an unrestricted ECDSA P-256 signing key")
	errKeyChanged    = errors.New("the TPM now holds a different key under this reference")
	errKeyFile       = errors.New("bad key file")
)

// marked marks every transport error ErrUnavailable: go-tpm returns them
// unwrapped, next to the TPM's own response codes (tpm2.TPMRC).
type marked struct{ transport.TPMCloser }

func (m marked) Send(cmd []byte) ([]byte, error) {
	rsp, err := m.TPMCloser.Send(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return rsp, nil
}

// openTPM opens the TPM at path (see openDevice) with its errors marked.
func openTPM(path string) (transport.TPMCloser, error) {
	t, err := openDevice(path)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return marked{t}, nil
}

// connect opens the TPM and loads or finds the key. Called with mu held.
func (k *Key) connect() error {
	var kf keyFile
	if k.ref.Blob != "" {
		// Read before opening the TPM: a bad file needs no device.
		var err error
		if kf, err = readKeyFile(k.ref.Blob); err != nil {
			return err
		}
	}
	t, err := openTPM(k.ref.Device)
	if err != nil {
		return err
	}
	// From here every failure goes through disconnect, which flushes
	// what was loaded and closes t.
	k.tpm, k.flush = t, false
	var pub *tpm2.TPMTPublic
	if k.ref.Blob != "" {
		parent, cleanup, err := loadParent(t, kf.parent, kf.rsaParent)
		if err != nil {
			k.disconnect()
			return err
		}
		rsp, err := tpm2.Load{ParentHandle: parent, InPrivate: kf.private, InPublic: kf.public}.Execute(t)
		cleanup()
		if err != nil {
			k.disconnect()
			return fmt.Errorf("load key: %w", err)
		}
		k.handle, k.name, k.flush = rsp.ObjectHandle, rsp.Name, true
		if pub, err = kf.public.Contents(); err != nil {
			k.disconnect()
			return fmt.Errorf("%w: %w", errKeyFile, err)
		}
	} else {
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(k.ref.Handle)}.Execute(t)
		if err != nil {
			k.disconnect()
			return fmt.Errorf("read public key at handle %#x: %w", k.ref.Handle, err)
		}
		k.handle, k.name = tpm2.TPMHandle(k.ref.Handle), rsp.Name
		if pub, err = rsp.OutPublic.Contents(); err != nil {
			k.disconnect()
			return err
		}
	}
	ecPub, err := signingPublic(pub)
	if err != nil {
		k.disconnect()
		return err
	}
	k.scheme = tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}
	if parms, _ := pub.Parameters.ECCDetail(); parms.Scheme.Scheme == tpm2.TPMAlgNull {
		k.scheme = tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		}
	}
	if k.pub == nil {
		k.pub = ecPub
	} else if !k.pub.Equal(ecPub) {
		k.disconnect()
		return errKeyChanged
	}
	return nil
}

// disconnect flushes the key if it was loaded and closes the TPM. Called
// with mu held.
func (k *Key) disconnect() error {
	if k.tpm == nil {
		return nil
	}
	if k.flush {
		// Best effort: on a TPM that went away there is nothing to flush,
		// and /dev/tpmrm0 flushes it when the file closes anyway.
		tpm2.FlushContext{FlushHandle: k.handle}.Execute(k.tpm)
	}
	err := k.tpm.Close()
	k.tpm, k.flush = nil, false
	return err
}

// signingPublic checks that a public area is an unrestricted ECDSA P-256
// signing key and returns its public key.
func signingPublic(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	if pub.Type != tpm2.TPMAlgECC || !pub.ObjectAttributes.SignEncrypt || pub.ObjectAttributes.Restricted {
		return nil, errNotSigningKey
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, err
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, errNotSigningKey
	}
	// Sign uses ECDSA over SHA-256: the key's own scheme (twoway's keys)
	// or, for a key without one (NULL: the tpm2 OpenSSL provider's and
	// tpm2_create's keys), the scheme Sign names.
	switch parms.Scheme.Scheme {
	case tpm2.TPMAlgNull:
	case tpm2.TPMAlgECDSA:
		if d, err := parms.Scheme.Details.ECDSA(); err != nil || d.HashAlg != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("%w: its ECDSA hash is not SHA-256", errNotSigningKey)
		}
	default:
		return nil, fmt.Errorf("%w: scheme %#x is not ECDSA", errNotSigningKey, parms.Scheme.Scheme)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	p, err := tpm2.ECDSAPub(parms, point)
	if err != nil {
		return nil, err
	}
	if p.Curve != elliptic.P256() {
		return nil, errNotSigningKey
	}
	return p, nil
}

// loadParent returns the parent a key file names: a persistent handle, or a
// primary key made from the standard SRK template in the owner hierarchy
// (the same key every time: primaries derive from the hierarchy's seed).
// cleanup flushes a primary this made.
func loadParent(t transport.TPM, parent tpm2.TPMHandle, rsa bool) (tpm2.AuthHandle, func(), error) {
	if parent != tpm2.TPMRHOwner {
		rsp, err := tpm2.ReadPublic{ObjectHandle: parent}.Execute(t)
		if err != nil {
			return tpm2.AuthHandle{}, nil, fmt.Errorf("read parent key at handle %#x: %w", parent, err)
		}
		return tpm2.AuthHandle{Handle: parent, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}, func() {}, nil
	}
	template := srkTemplate(rsa)
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(template),
	}.Execute(t)
	if err != nil {
		return tpm2.AuthHandle{}, nil, fmt.Errorf("create the storage root key (owner hierarchy, standard SRK template): %w", err)
	}
	cleanup := func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(t) }
	return tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}, cleanup, nil
}

// srkTemplate is the SRK template of the TCG provisioning guidance as the
// key file's users apply it: go-tpm's, with an empty unique field, as
// tpm2-tss-engine and the tpm2 OpenSSL provider create the primary for a
// key file whose parent is the owner hierarchy. The unique field seeds the
// primary key, so with go-tpm's 32 zero bytes OpenSSL could not load
// twoway's key files (TPM_RC_INTEGRITY), nor twoway theirs.
func srkTemplate(rsa bool) tpm2.TPMTPublic {
	if rsa {
		t := tpm2.RSASRKTemplate
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
		return t
	}
	t := tpm2.ECCSRKTemplate
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	return t
}

// readKeyFile reads a TSS2 key file, refusing one others can read.
func readKeyFile(path string) (keyFile, error) {
	if err := checkPrivate(path); err != nil {
		return keyFile{}, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return keyFile{}, err
	}
	kf, err := parseKeyFile(data)
	if err != nil {
		return keyFile{}, fmt.Errorf("%w %s: %w", errKeyFile, path, err)
	}
	return kf, nil
}

// readPIN reads the auth value from the PIN file, if any; a trailing
// newline is not part of it.
func readPIN(r Ref) ([]byte, error) {
	if r.PINFile == "" {
		return nil, nil
	}
	if err := checkPrivate(r.PINFile); err != nil {
		return nil, fmt.Errorf("tpm key %s: pin-source: %w", r, err)
	}
	b, err := os.ReadFile(r.PINFile)
	if err != nil {
		return nil, fmt.Errorf("tpm key %s: pin-source: %w", r, err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("tpm key %s: pin-source %s is empty", r, r.PINFile)
	}
	return b, nil
}

func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s: %w (mode %#o; chmod 600 it)", path, ErrInsecurePermissions, m)
	}
	return nil
}

// Generate creates a new ECDSA P-256 signing key in the TPM, stores it as
// the reference says, and returns it opened (the caller must Close it). The
// private key is made by the TPM and cannot be exported from it (fixedTPM,
// fixedParent).
//
// The key's parent is the persistent SRK at 0x81000001 when the TPM has a
// storage key there, else a primary key made from the TCG's standard ECC
// P-256 SRK template in the owner hierarchy (whose auth must be empty, as it
// is on most Linux machines). With blob= the key file is created 0600 and
// must not exist; with handle= the handle must be free. Generate never
// replaces an existing key (ErrExists).
func Generate(ref string) (*Key, error) {
	r, err := Parse(ref)
	if err != nil {
		return nil, err
	}
	return r.Generate()
}

// Generate is Generate for a parsed reference (from ParseIn, say).
func (r Ref) Generate() (*Key, error) {
	if !supported {
		return nil, fmt.Errorf("tpm key %s: %w", r, ErrUnsupported)
	}
	auth, err := readPIN(r)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Key, error) {
		return nil, fmt.Errorf("tpm key %s: generate: %w", r, err)
	}
	// Validate what can be checked before the TPM does any work.
	if r.Blob != "" {
		if _, err := os.Lstat(r.Blob); err == nil {
			return fail(fmt.Errorf("%s: %w", r.Blob, ErrExists))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
		if fi, err := os.Stat(filepath.Dir(r.Blob)); err != nil || !fi.IsDir() {
			return fail(fmt.Errorf("directory of %s does not exist", r.Blob))
		}
	}
	t, err := openTPM(r.Device)
	if err != nil {
		return fail(err)
	}
	err = generate(t, r, auth)
	t.Close()
	if err != nil {
		return fail(err)
	}
	return r.Open()
}

// generate creates the key and stores it as r says.
func generate(t transport.TPM, r Ref, auth []byte) error {
	if r.Handle != 0 {
		_, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(r.Handle)}.Execute(t)
		if err == nil {
			return fmt.Errorf("persistent handle %#x: %w", r.Handle, ErrExists)
		}
		if !errors.Is(err, tpm2.TPMRCHandle) {
			return fmt.Errorf("persistent handle %#x: %w", r.Handle, err)
		}
	}

	parentHandle := tpm2.TPMRHOwner
	if rsp, err := (tpm2.ReadPublic{ObjectHandle: srkHandle}).Execute(t); err == nil {
		if p, err := rsp.OutPublic.Contents(); err == nil && p.ObjectAttributes.Restricted && p.ObjectAttributes.Decrypt {
			parentHandle = srkHandle
		}
	}
	parent, cleanup, err := loadParent(t, parentHandle, false)
	if err != nil {
		return err
	}
	defer cleanup()

	created, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth},
		}},
		InPublic: tpm2.New2B(keyTemplate(len(auth) == 0)),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}

	if r.Blob != "" {
		pem, err := keyFile{
			emptyAuth: len(auth) == 0,
			parent:    parentHandle,
			public:    created.OutPublic,
			private:   created.OutPrivate,
		}.marshal()
		if err != nil {
			return err
		}
		return writeExclusive(r.Blob, pem)
	}
	loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(t)
	if err != nil {
		return fmt.Errorf("load key: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(t)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
		PersistentHandle: tpm2.TPMHandle(r.Handle),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("persist key at handle %#x: %w", r.Handle, err)
	}
	return nil
}

// keyTemplate is the public template of a twoway key: ECDSA P-256 over
// SHA-256, made inside the TPM and bound to it. Dictionary-attack
// protection is off only for a key without an auth value, which cannot be
// guessed at.
func keyTemplate(noAuth bool) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                noAuth,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// writeExclusive creates path 0600 with data, failing if it exists.
func writeExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
