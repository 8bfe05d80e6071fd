package authority

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twoway/twoway/pki"
)

// File names inside a CA directory.
const (
	CACertFile   = "ca.crt"     // this CA's certificate only
	CAKeyFile    = "ca.key"     // its private key, encrypted unless made without a password
	DBFile       = "db.json"    // what it issued and revoked, the CRL number, enrollment tokens
	BundleFile   = "bundle.crt" // below the root: this CA, then its ancestors up to the root
	CRLFile      = "crl.pem"    // default output of (*CA).CRL
	RootDir      = "root"       // Init's offline root CA
	ServerCADir  = "server-ca"  // Init's intermediate for gateway certificates
	ClientCADir  = "client-ca"  // Init's intermediate for user and device certificates
	defaultOrg   = "twoway"
	clockSkew    = 5 * time.Minute
	rootYears    = 10
	issuingYears = 5
)

// Errors of the CA tooling that callers branch on.
var (
	ErrNotCA          = errors.New("not a CA certificate")
	ErrCAExpired      = errors.New("CA certificate expired")
	ErrOutlivesCA     = errors.New("certificate would outlive its CA")
	ErrPathLen        = errors.New("path length constraint")
	ErrRootIssue      = errors.New("a root CA issues only CA certificates")
	ErrInvalidName    = errors.New("invalid name")
	ErrInvalidGroup   = errors.New("invalid group")
	ErrBadCSR         = errors.New("invalid certificate request")
	ErrNotIssued      = errors.New("certificate not issued by this CA")
	ErrAlreadyRevoked = errors.New("certificate already revoked")
	ErrUnknownReason  = errors.New("unknown revocation reason")
)

// caError carries a complete message while still matching its sentinel
// with errors.Is, so that messages need not repeat the sentinel's text.
type caError struct {
	msg string
	err error
}

func (e *caError) Error() string { return e.msg }
func (e *caError) Unwrap() error { return e.err }

func errorf(sentinel error, format string, args ...any) error {
	return &caError{msg: fmt.Sprintf(format, args...), err: sentinel}
}

// CA is a certificate authority directory opened for use. The private key
// is decrypted only when something must be signed. A *CA is safe for
// concurrent use, and every change to the database is made under the
// directory's lock (db.lock), so goroutines and processes with handles on
// one CA see each other's changes and never undo them.
type CA struct {
	// Dir is the CA directory.
	Dir string
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// Bundle is Cert followed by its ancestors up to and including the root
	// (just Cert for a root).
	Bundle []*x509.Certificate

	password func() ([]byte, error)

	mu  sync.Mutex    // guards db and key
	db  *DB           // as of opening or this handle's last change
	key crypto.Signer // nil until first needed
}

// OpenCA opens the CA in dir. password is called only when something has
// to be signed and the key is encrypted, and not again once the key is
// decrypted; it may be nil for operations that sign nothing (List, Revoke)
// or for unencrypted keys. For convenience dir may also name the CA's
// ca.crt file.
func OpenCA(dir string, password func() ([]byte, error)) (*CA, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("CA directory %s does not exist", dir)
	} else if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if !fi.IsDir() {
		if filepath.Base(dir) != CACertFile {
			if certs, err := pki.LoadCertificates(dir); err == nil && !certs[0].IsCA {
				return nil, errorf(ErrNotCA, "%s is not a CA certificate (a CA is named by its directory, e.g. pki/client-ca)", dir)
			}
			return nil, fmt.Errorf("%s is a file; a CA is named by its directory (the one holding %s and %s)", dir, CACertFile, CAKeyFile)
		}
		dir = filepath.Dir(dir)
	}
	ca := &CA{Dir: dir, password: password}
	certPath := filepath.Join(dir, CACertFile)
	certs, err := pki.LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	ca.Cert = certs[0]
	if !ca.Cert.BasicConstraintsValid || !ca.Cert.IsCA {
		return nil, errorf(ErrNotCA, "%s is not a CA certificate", certPath)
	}
	if ca.IsRoot() {
		ca.Bundle = []*x509.Certificate{ca.Cert}
	} else if ca.Bundle, err = loadBundle(dir, ca.Cert); err != nil {
		return nil, err
	}
	if ca.db, err = LoadDB(filepath.Join(dir, DBFile)); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadBundle reads bundle.crt and checks that it is cert followed by its
// issuers, each signed by the next, ending at a root.
func loadBundle(dir string, cert *x509.Certificate) ([]*x509.Certificate, error) {
	path := filepath.Join(dir, BundleFile)
	bundle, err := pki.LoadCertificates(path)
	if err != nil {
		return nil, err
	}
	if !bundle[0].Equal(cert) {
		return nil, fmt.Errorf("%s does not start with %s", path, CACertFile)
	}
	for i := 0; i+1 < len(bundle); i++ {
		if err := bundle[i].CheckSignatureFrom(bundle[i+1]); err != nil {
			return nil, fmt.Errorf("%s: certificate %d is not signed by certificate %d: %w", path, i+1, i+2, err)
		}
	}
	if !pki.IsSelfSigned(bundle[len(bundle)-1]) {
		return nil, fmt.Errorf("%s does not end with a self-signed root CA", path)
	}
	return bundle, nil
}

// IsRoot reports whether the CA is a self-signed root.
func (ca *CA) IsRoot() bool { return pki.IsSelfSigned(ca.Cert) }

// Name is the CA's common name.
func (ca *CA) Name() string { return ca.Cert.Subject.CommonName }

// CRLNumber is the number of the last CRL the CA signed (0: none yet), as
// of opening the CA or its last change.
func (ca *CA) CRLNumber() int64 { return ca.snapshot().CRLNumber }

// snapshot is the handle's copy of the database. Changes replace the copy
// rather than modify it, so it can be read without holding ca.mu.
func (ca *CA) snapshot() *DB {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.db
}

// chain is what a certificate issued by ca presents after itself: the
// issuing CAs, nearest first, without the root (peers have it already).
func (ca *CA) chain() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range ca.Bundle {
		if !pki.IsSelfSigned(c) {
			out = append(out, c)
		}
	}
	return out
}

// Unlock decrypts the CA key now rather than at the first signature, so
// that a wrong password is reported before anything else is asked.
func (ca *CA) Unlock() error {
	_, err := ca.signer()
	return err
}

// signer decrypts the CA key on first use. Concurrent callers wait for
// the first, so the password is asked for once.
func (ca *CA) signer() (crypto.Signer, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.key != nil {
		return ca.key, nil
	}
	path := filepath.Join(ca.Dir, CAKeyFile)
	enc, err := pki.IsEncryptedKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	var pw []byte
	if enc {
		if ca.password == nil {
			return nil, fmt.Errorf("%w for CA key %s", pki.ErrPasswordRequired, path)
		}
		if pw, err = ca.password(); err != nil {
			return nil, err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, err := pki.ParsePrivateKeyPEM(data, pw)
	switch {
	case errors.Is(err, pki.ErrBadPassword):
		return nil, fmt.Errorf("%w for CA key %s", pki.ErrBadPassword, path)
	case errors.Is(err, pki.ErrPasswordRequired):
		return nil, fmt.Errorf("%w for CA key %s", pki.ErrPasswordRequired, path)
	case err != nil:
		return nil, fmt.Errorf("CA key %s: %w", path, err)
	}
	if err := pki.KeyMatches(ca.Cert, key); err != nil {
		return nil, fmt.Errorf("CA key %s: %w %s", path, err, filepath.Join(ca.Dir, CACertFile))
	}
	ca.key = key
	return key, nil
}

// checkUsable refuses to sign with a CA that is, or has an ancestor that
// is, outside its validity period: what it signed would not verify.
func (ca *CA) checkUsable(now time.Time) error {
	for _, c := range ca.Bundle {
		if now.After(c.NotAfter) {
			return errorf(ErrCAExpired, "CA %q (%s) expired on %s", c.Subject.CommonName, ca.Dir, c.NotAfter.UTC().Format(time.DateOnly))
		}
		if now.Before(c.NotBefore) {
			return errorf(ErrCAExpired, "CA %q (%s) is not valid before %s", c.Subject.CommonName, ca.Dir, c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// validity computes a certificate's validity period and refuses one that
// would end after the CA's own certificate.
func (ca *CA) validity(now time.Time, notAfter time.Time, what string) (time.Time, time.Time, error) {
	notBefore := now.Add(-clockSkew)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	if notAfter.After(ca.Cert.NotAfter) {
		maxDays := int(ca.Cert.NotAfter.Sub(now) / (24 * time.Hour))
		return time.Time{}, time.Time{}, errorf(ErrOutlivesCA,
			"%s would expire on %s, after its CA %q (%s) expires on %s; use --days %d or less",
			what, notAfter.UTC().Format(time.DateOnly), ca.Name(), ca.Dir, ca.Cert.NotAfter.UTC().Format(time.DateOnly), maxDays)
	}
	return notBefore, notAfter, nil
}

// sign creates a certificate from tmpl for pub, then verifies it against the
// CA's bundle the way a peer would, so that a certificate that could never
// be used (name constraints, path length, usage) is never handed out.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	key, err := ca.signer()
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range ca.Bundle {
		if pki.IsSelfSigned(c) {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	// Checked at a moment inside the new certificate's validity, which
	// validity() keeps inside the CA's.
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: cert.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := cert.Verify(opts); err != nil {
		return nil, fmt.Errorf("refusing to issue %q: it would not verify: %w", cert.Subject.CommonName, err)
	}
	return cert, nil
}

// newSerial returns a random positive 128-bit serial number unused by db.
func newSerial(db *DB) (*big.Int, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 && db.Find(n) < 0 {
			return n, nil
		}
	}
}

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256
// of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// EncodeCertificatesPEM encodes certs as CERTIFICATE blocks, in order, as
// the CA writes a certificate file: the leaf, then its issuing chain.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte { return encodeCerts(certs...) }

func encodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// checkFree fails if any of paths exists and force is not set, so that a
// command checks all its outputs before it does any work.
func checkFree(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// file is one output of a command, written only after everything succeeded.
type file struct {
	path string
	data []byte
	perm os.FileMode
}

func writeAll(force bool, files ...file) error {
	for _, f := range files {
		if err := WriteFile(f.path, f.data, f.perm, force); err != nil {
			return err
		}
	}
	return nil
}

// newCA is a CA made in memory: its files, ready to be written.
type newCA struct {
	dir   string
	cert  *x509.Certificate
	key   crypto.Signer
	files []file
}

// caFiles renders the files of a new CA directory.
func caFiles(dir string, cert *x509.Certificate, key crypto.Signer, password []byte, parentBundle []*x509.Certificate) (*newCA, error) {
	keyPEM, err := MarshalPrivateKeyPEM(key, password)
	if err != nil {
		return nil, err
	}
	dbData, err := dbJSON(&DB{})
	if err != nil {
		return nil, err
	}
	n := &newCA{dir: dir, cert: cert, key: key, files: []file{
		{filepath.Join(dir, CAKeyFile), keyPEM, 0o600},
		{filepath.Join(dir, CACertFile), encodeCerts(cert), 0o644},
		{filepath.Join(dir, DBFile), dbData, 0o600},
	}}
	if parentBundle != nil {
		bundle := append([]*x509.Certificate{cert}, parentBundle...)
		n.files = append(n.files, file{filepath.Join(dir, BundleFile), encodeCerts(bundle...), 0o644})
	}
	return n, nil
}

func (n *newCA) paths() []string {
	var out []string
	for _, f := range n.files {
		out = append(out, f.path)
	}
	return out
}

// caTemplate is the template of a CA certificate.
func caTemplate(serial *big.Int, subject pkix.Name, pub crypto.PublicKey, notBefore, notAfter time.Time, maxPathLen int) (*x509.Certificate, error) {
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	return t, nil
}

// InitOptions configure Init.
type InitOptions struct {
	// Org is the organization name in every CA subject; default "twoway".
	Org string
	// KeyType of the three CA keys; default ECDSA P-256.
	KeyType KeyType
	// Password encrypts the three CA keys; empty leaves them unencrypted.
	Password []byte
	// Force replaces an existing PKI in the directory.
	Force bool
}

// InitResult is the PKI Init made.
type InitResult struct {
	Root, ServerCA, ClientCA *CA
}

// Init creates a PKI in dir: an offline root CA valid for 10 years and, under
// it, a server CA and a client CA valid for 5 years, in the subdirectories
// root, server-ca and client-ca. The root places no path length limit; each
// intermediate allows one more level of sub-CAs. Nothing is written unless
// every file can be.
func Init(dir string, opts InitOptions) (*InitResult, error) {
	org := opts.Org
	if org == "" {
		org = defaultOrg
	}
	if err := checkText("organization", org); err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	notBefore := now.Add(-clockSkew)

	mk := func(sub, cn string, notAfter time.Time, pathLen int, parent *newCA) (*newCA, error) {
		key, err := GenerateKey(opts.KeyType)
		if err != nil {
			return nil, err
		}
		serial, err := newSerial(&DB{})
		if err != nil {
			return nil, err
		}
		tmpl, err := caTemplate(serial, pkix.Name{CommonName: cn, Organization: []string{org}}, key.Public(), notBefore, notAfter, pathLen)
		if err != nil {
			return nil, err
		}
		issuer, signer, parentBundle := tmpl, key, []*x509.Certificate(nil)
		if parent != nil {
			issuer, signer, parentBundle = parent.cert, parent.key, []*x509.Certificate{parent.cert}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", cn, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return caFiles(filepath.Join(dir, sub), cert, key, opts.Password, parentBundle)
	}
	root, err := mk(RootDir, org+" root CA", now.AddDate(rootYears, 0, 0), -1, nil)
	if err != nil {
		return nil, err
	}
	server, err := mk(ServerCADir, org+" server CA", now.AddDate(issuingYears, 0, 0), 1, root)
	if err != nil {
		return nil, err
	}
	client, err := mk(ClientCADir, org+" client CA", now.AddDate(issuingYears, 0, 0), 1, root)
	if err != nil {
		return nil, err
	}
	// The root's database records the two intermediates so that either can
	// be revoked through the root.
	rootDB := &DB{Certificates: []Record{newRecord(server.cert, KindCA), newRecord(client.cert, KindCA)}}
	for i, f := range root.files {
		if filepath.Base(f.path) == DBFile {
			data, err := dbJSON(rootDB)
			if err != nil {
				return nil, err
			}
			root.files[i].data = data
		}
	}

	all := []*newCA{root, server, client}
	var paths []string
	for _, n := range all {
		paths = append(paths, n.paths()...)
	}
	if err := checkFree(opts.Force, paths...); err != nil {
		return nil, err
	}
	for _, n := range all {
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
	}
	for _, n := range all {
		if err := writeAll(opts.Force, n.files...); err != nil {
			return nil, err
		}
		// A CRL left from the replaced PKI is signed by a key that no
		// longer exists; peers loading it would only get a signature error.
		if err := os.Remove(filepath.Join(n.dir, CRLFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	res := &InitResult{}
	for i, p := range []**CA{&res.Root, &res.ServerCA, &res.ClientCA} {
		n := all[i]
		ca, err := OpenCA(n.dir, nil)
		if err != nil {
			return nil, err
		}
		ca.key = n.key
		*p = ca
	}
	return res, nil
}

// SubCAOptions describe a subordinate CA made by CreateSubCA.
type SubCAOptions struct {
	// Name is the new CA's common name.
	Name string
	// Dir is the new CA directory; default: a sibling of the parent's
	// directory named Name.
	Dir string
	// PathLen is the number of further CA levels allowed below the new CA;
	// 0 (the default) lets it issue only leaf certificates, -1 sets no limit
	// (only where the parent has none).
	PathLen int
	// PermittedDNS and PermittedIPs, if any, become critical name
	// constraints: the new CA may only issue for names within them.
	PermittedDNS []string
	PermittedIPs []*net.IPNet
	// Days of validity; 0 means the parent's remaining lifetime, at most 5
	// years. More than the parent has left is an error.
	Days int
	// KeyType of the new CA key; default ECDSA P-256.
	KeyType KeyType
	// Password encrypts the new CA key; empty leaves it unencrypted.
	Password []byte
	// Force replaces an existing CA in Dir.
	Force bool
}

// CreateSubCA makes a CA below ca, records it in ca's database (so that ca
// can revoke it) and writes its directory: ca.crt, ca.key, db.json and
// bundle.crt.
func (ca *CA) CreateSubCA(opts SubCAOptions) (*CA, error) {
	if err := checkText("CA name", opts.Name); err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		if strings.ContainsAny(opts.Name, `/\`) || opts.Name == "." || opts.Name == ".." {
			return nil, fmt.Errorf("%w: CA name %q cannot be a directory name; give the directory with --dir", ErrInvalidName, opts.Name)
		}
		dir = filepath.Join(filepath.Dir(filepath.Clean(ca.Dir)), opts.Name)
	}
	if err := ca.checkPathLen(opts.PathLen); err != nil {
		return nil, err
	}
	for _, d := range opts.PermittedDNS {
		if err := checkDNSName(strings.TrimPrefix(d, "."), false); err != nil {
			return nil, fmt.Errorf("permitted DNS domain: %w", err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := ca.checkUsable(now); err != nil {
		return nil, err
	}
	var notAfter time.Time
	if opts.Days < 0 {
		return nil, fmt.Errorf("--days must be positive, not %d", opts.Days)
	} else if opts.Days > 0 {
		notAfter = now.AddDate(0, 0, opts.Days)
	} else {
		notAfter = now.AddDate(issuingYears, 0, 0)
		if notAfter.After(ca.Cert.NotAfter) {
			notAfter = ca.Cert.NotAfter
		}
	}
	notBefore, notAfter, err := ca.validity(now, notAfter, "CA "+opts.Name)
	if err != nil {
		return nil, err
	}
	paths := []string{CAKeyFile, CACertFile, DBFile, BundleFile}
	for i, p := range paths {
		paths[i] = filepath.Join(dir, p)
	}
	if err := checkFree(opts.Force, paths...); err != nil {
		return nil, err
	}
	if err := ca.Unlock(); err != nil {
		return nil, err
	}
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(ca.snapshot())
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{CommonName: opts.Name, Organization: ca.Cert.Subject.Organization}
	tmpl, err := caTemplate(serial, subject, key.Public(), notBefore, notAfter, opts.PathLen)
	if err != nil {
		return nil, err
	}
	if len(opts.PermittedDNS) > 0 || len(opts.PermittedIPs) > 0 {
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = opts.PermittedDNS
		tmpl.PermittedIPRanges = opts.PermittedIPs
		// A constraint only limits names of its own type (RFC 5280
		// 4.2.1.10): permitted DNS domains alone would leave the CA free to
		// certify any IP address, and permitted ranges alone any host name.
		// Exclude the type that was not named. An empty DNS constraint
		// matches every name. (OpenSSL also holds a leaf's CN to DNS
		// constraints when it has no DNS SAN, so `openssl verify` refuses
		// the IP-named leaves of an IP-only CA; crypto/x509 ignores the CN.)
		if len(opts.PermittedIPs) == 0 {
			tmpl.ExcludedIPRanges = []*net.IPNet{
				{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
				{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
			}
		}
		if len(opts.PermittedDNS) == 0 {
			tmpl.ExcludedDNSDomains = []string{""}
		}
	}
	cert, err := ca.sign(tmpl, key.Public(), x509.ExtKeyUsageAny)
	if err != nil {
		return nil, err
	}
	n, err := caFiles(dir, cert, key, opts.Password, ca.Bundle)
	if err != nil {
		return nil, err
	}
	// Record first: a CA that exists on disk but not in its parent's
	// database could never be revoked.
	if err := ca.record(newRecord(cert, KindCA)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeAll(opts.Force, n.files...); err != nil {
		return nil, err
	}
	sub, err := OpenCA(dir, nil)
	if err != nil {
		return nil, err
	}
	sub.key = key
	return sub, nil
}

// checkPathLen refuses a sub-CA the parent's own path length constraint
// would make unusable.
func (ca *CA) checkPathLen(pathLen int) error {
	if pathLen < -1 {
		return fmt.Errorf("%w: path length must be 0 or more, not %d", ErrPathLen, pathLen)
	}
	parentLimited := ca.Cert.MaxPathLen > 0 || (ca.Cert.MaxPathLen == 0 && ca.Cert.MaxPathLenZero)
	if !parentLimited {
		return nil
	}
	if ca.Cert.MaxPathLen == 0 {
		return errorf(ErrPathLen, "CA %q (%s) has path length 0: it cannot issue sub-CAs", ca.Name(), ca.Dir)
	}
	if pathLen < 0 || pathLen >= ca.Cert.MaxPathLen {
		return errorf(ErrPathLen, "CA %q (%s) has path length %d: a sub-CA may have path length %d at most", ca.Name(), ca.Dir, ca.Cert.MaxPathLen, ca.Cert.MaxPathLen-1)
	}
	return nil
}

// update re-reads the database, applies change and saves the result, all
// under the directory's lock, so that two handles on one CA, in one process
// or two, never write back each other's stale copy, and a change decided on
// what the database holds (a certificate not yet revoked) is made once.
// change must not wait for anything but the CPU: others wait for the lock.
func (ca *CA) update(change func(db *DB) error) error {
	unlock, err := lockDB(ca.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(ca.Dir, DBFile)
	db, err := LoadDB(path)
	if err != nil {
		return err
	}
	if err := change(db); err != nil {
		return err
	}
	if err := db.Save(path); err != nil {
		return fmt.Errorf("update CA database: %w", err)
	}
	// Still under the lock, so the handle's copy moves forward only.
	ca.mu.Lock()
	ca.db = db
	ca.mu.Unlock()
	return nil
}

// record adds r to the database.
func (ca *CA) record(r Record) error {
	return ca.update(func(db *DB) error {
		db.Certificates = append(db.Certificates, r)
		return nil
	})
}

// checkText accepts a subject text field: 1-64 characters (the X.509 upper
// bound for names), no control characters.
func checkText(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if len([]rune(s)) > 64 {
		return fmt.Errorf("%w: %s %q is longer than 64 characters", ErrInvalidName, what, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %q contains a control character", ErrInvalidName, what, s)
		}
	}
	return nil
}
