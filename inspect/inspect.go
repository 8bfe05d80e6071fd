package inspect

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/twoway/twoway/internal/pbe"
	"github.com/twoway/twoway/pki"
)

// Errors about files Inspect cannot read.
var (
	ErrUnknownFormat = errors.New("not a certificate, certificate chain, CSR, CRL, PKCS#12 file or key")
	ErrCorruptPEM    = errors.New("truncated or corrupt PEM")
	ErrEmptyFile     = errors.New("file is empty")
)

// What a Report describes, in Report.Type.
const (
	TypeCertificate      = "certificate"
	TypeCertificateChain = "certificate chain"
	TypeRequest          = "certificate request"
	TypeCRL              = "CRL"
	TypePKCS12           = "PKCS#12"
	TypePrivateKey       = "private key"
	TypePublicKey        = "public key"
	TypeBundle           = "PEM bundle" // several kinds of object in one file
)

// Report is a structured summary of a PKI file. It never holds private key
// material: only what kind of key a file holds and how it is protected.
type Report struct {
	Type         string            `json:"type"`
	Encoding     string            `json:"encoding"` // "PEM" or "DER"
	Certificates []CertificateInfo `json:"certificates,omitempty"`
	Requests     []RequestInfo     `json:"requests,omitempty"`
	CRLs         []CRLInfo         `json:"crls,omitempty"`
	PrivateKeys  []PrivateKeyInfo  `json:"private_keys,omitempty"`
	PublicKeys   []KeyInfo         `json:"public_keys,omitempty"`
	PKCS12       *PKCS12Info       `json:"pkcs12,omitempty"`
	// Skipped lists PEM block types that were present but not understood.
	Skipped []string `json:"skipped,omitempty"`
}

// KeyInfo describes a public key (or the public half of a private key).
type KeyInfo struct {
	Algorithm string `json:"algorithm"` // "ECDSA", "RSA", "Ed25519", "X25519"
	Curve     string `json:"curve,omitempty"`
	Bits      int    `json:"bits,omitempty"`
	// SPKIPin is the pin of the public key (see pki.SPKIPin), so a key file can
	// be matched to a certificate by eye.
	SPKIPin string `json:"spki_pin,omitempty"`
}

// String is the short form operators know: "ECDSA P-256", "RSA 3072",
// "Ed25519".
func (k KeyInfo) String() string {
	switch {
	case k.Curve != "":
		return k.Algorithm + " " + k.Curve
	case k.Algorithm == "RSA" && k.Bits > 0:
		return fmt.Sprintf("RSA %d", k.Bits)
	}
	return k.Algorithm
}

// CertificateInfo summarises one certificate.
type CertificateInfo struct {
	Subject     string    `json:"subject"`
	CommonName  string    `json:"common_name,omitempty"`
	Groups      []string  `json:"groups,omitempty"` // Subject OU values
	DNSNames    []string  `json:"dns_names,omitempty"`
	IPAddresses []string  `json:"ip_addresses,omitempty"`
	Emails      []string  `json:"emails,omitempty"`
	URIs        []string  `json:"uris,omitempty"`
	Issuer      string    `json:"issuer"`
	SelfSigned  bool      `json:"self_signed"`
	Serial      string    `json:"serial"` // lowercase hex, as in pki.Identity
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Status      string    `json:"status"` // pki.StatusValid, pki.StatusExpired or pki.StatusNotYetValid
	// DaysLeft is the number of whole days until NotAfter, rounded down
	// (pki.DaysLeft): 0 on the last day, negative once expired (-1 within
	// the first day), as in `twoway pki list --json`.
	DaysLeft int  `json:"days_left"`
	IsCA     bool `json:"is_ca"`
	// MaxPathLen is the CA's path length limit; nil means no limit (or not
	// a CA).
	MaxPathLen            *int             `json:"max_path_len,omitempty"`
	KeyUsage              []string         `json:"key_usage,omitempty"`
	ExtKeyUsage           []string         `json:"ext_key_usage,omitempty"`
	NameConstraints       *NameConstraints `json:"name_constraints,omitempty"`
	Key                   KeyInfo          `json:"key"`
	SignatureAlgorithm    string           `json:"signature_algorithm"`
	Fingerprint           string           `json:"sha256_fingerprint"`
	SPKIPin               string           `json:"spki_pin"`
	SubjectKeyID          string           `json:"subject_key_id,omitempty"`
	AuthorityKeyID        string           `json:"authority_key_id,omitempty"`
	CRLDistributionPoints []string         `json:"crl_distribution_points,omitempty"`
}

// NameConstraints lists a CA's name constraints extension.
type NameConstraints struct {
	Critical        bool     `json:"critical"`
	PermittedDNS    []string `json:"permitted_dns,omitempty"`
	ExcludedDNS     []string `json:"excluded_dns,omitempty"`
	PermittedIPs    []string `json:"permitted_ips,omitempty"`
	ExcludedIPs     []string `json:"excluded_ips,omitempty"`
	PermittedEmails []string `json:"permitted_emails,omitempty"`
	ExcludedEmails  []string `json:"excluded_emails,omitempty"`
	PermittedURIs   []string `json:"permitted_uri_domains,omitempty"`
	ExcludedURIs    []string `json:"excluded_uri_domains,omitempty"`
}

// RequestInfo summarises a certificate signing request.
type RequestInfo struct {
	Subject            string   `json:"subject"`
	CommonName         string   `json:"common_name,omitempty"`
	Groups             []string `json:"groups,omitempty"`
	DNSNames           []string `json:"dns_names,omitempty"`
	IPAddresses        []string `json:"ip_addresses,omitempty"`
	Emails             []string `json:"emails,omitempty"`
	URIs               []string `json:"uris,omitempty"`
	Key                KeyInfo  `json:"key"`
	SignatureAlgorithm string   `json:"signature_algorithm"`
	// SignatureValid says whether the request is signed by the key it
	// contains, i.e. whoever made it holds the private key.
	SignatureValid bool   `json:"signature_valid"`
	SignatureError string `json:"signature_error,omitempty"`
}

// CRLInfo summarises a certificate revocation list. Its signature cannot be
// checked without the issuer's certificate; pki verify does that.
type CRLInfo struct {
	Issuer             string         `json:"issuer"`
	Number             string         `json:"number,omitempty"` // decimal
	ThisUpdate         time.Time      `json:"this_update"`
	NextUpdate         *time.Time     `json:"next_update,omitempty"`
	Stale              bool           `json:"stale"` // NextUpdate has passed
	SignatureAlgorithm string         `json:"signature_algorithm"`
	AuthorityKeyID     string         `json:"authority_key_id,omitempty"`
	Revoked            []RevokedEntry `json:"revoked"`
}

// RevokedEntry is one serial listed in a CRL.
type RevokedEntry struct {
	Serial    string    `json:"serial"` // lowercase hex
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"` // RFC 5280 name; empty when unspecified
}

// PrivateKeyInfo describes a private key without revealing it.
type PrivateKeyInfo struct {
	Format     string `json:"format"` // "PKCS#8", "SEC 1", "PKCS#1", "PKCS#12"
	Encrypted  bool   `json:"encrypted"`
	Encryption string `json:"encryption,omitempty"` // scheme, for encrypted keys
	// Key is nil when the key is encrypted and no password was given; for
	// legacy PEM encryption only Algorithm is known.
	Key *KeyInfo `json:"key,omitempty"`
	// MatchesCertificate names the certificate in the same file whose
	// public key this key belongs to, if any.
	MatchesCertificate string `json:"matches_certificate,omitempty"`
}

// PKCS12Info describes how a PKCS#12 file is protected.
type PKCS12Info struct {
	MAC            string `json:"mac"`
	CertEncryption string `json:"cert_encryption"`
	KeyEncryption  string `json:"key_encryption"`
	// Legacy is set when anything uses pre-PBES2 algorithms (RC2, 3DES,
	// SHA-1 MAC): what old keychains need, and what OpenSSL 3 reads only
	// with -legacy when RC2 is involved.
	Legacy bool `json:"legacy"`
}

// Inspect summarises data, which may be PEM (any mix of certificates, CSRs,
// CRLs and keys, with or without surrounding text) or a single DER object:
// a certificate or concatenated certificates, a CSR, a CRL, a private key or
// a PKCS#12 file. The type is detected by content.
//
// password is called at most once, and only when a secret is needed: to
// open a PKCS#12 file (after trying the empty password), or to show the
// type of an encrypted private key. It may be nil. For a private key,
// a password function returning an error that wraps pki.ErrPasswordRequired, or
// an empty password, leaves the key reported as encrypted with its type
// unknown; any other error is returned.
func Inspect(data []byte, password func() ([]byte, error)) (*Report, error) {
	return inspectAt(data, password, time.Now())
}

func inspectAt(data []byte, password func() ([]byte, error), now time.Time) (*Report, error) {
	in := &inspector{now: now, password: password}
	var r *Report
	var err error
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return nil, ErrEmptyFile
	case bytes.Contains(data, []byte("-----BEGIN ")):
		r, err = in.pem(data)
	case data[0] == 0x30: // every DER object we know is a SEQUENCE
		r, err = in.der(data)
	default:
		return nil, ErrUnknownFormat
	}
	if err != nil {
		return nil, err
	}
	r.Type = reportType(r)
	matchKeys(r, in.keys, in.certs)
	return r, nil
}

// inspector carries what parsing one file needs across its objects.
type inspector struct {
	now      time.Time
	password func() ([]byte, error)
	pwDone   bool
	pw       []byte
	pwErr    error
	keys     []crypto.Signer     // decrypted private keys, parallel to Report.PrivateKeys
	certs    []*x509.Certificate // parallel to Report.Certificates
}

// secret calls the password function once and remembers the answer, so a
// file holding several encrypted objects prompts only once.
func (in *inspector) secret() ([]byte, error) {
	if !in.pwDone {
		in.pwDone = true
		if in.password == nil {
			in.pwErr = pki.ErrPasswordRequired
		} else {
			in.pw, in.pwErr = in.password()
		}
	}
	return in.pw, in.pwErr
}

func (in *inspector) pem(data []byte) (*Report, error) {
	r := &Report{Encoding: "PEM"}
	begins := bytes.Count(data, []byte("-----BEGIN "))
	blocks := 0
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks++
		if err := in.pemBlock(r, b, blocks); err != nil {
			return nil, err
		}
	}
	// pem.Decode silently skips a block it cannot decode (bad base64, no
	// END line) and goes on to the next, so compare with the BEGIN lines.
	if blocks < begins {
		return nil, fmt.Errorf("%w: %d of %d PEM blocks could not be decoded", ErrCorruptPEM, begins-blocks, begins)
	}
	if len(r.Skipped) == blocks {
		return nil, fmt.Errorf("%w (PEM blocks: %s)", ErrUnknownFormat, strings.Join(r.Skipped, ", "))
	}
	return r, nil
}

func (in *inspector) pemBlock(r *Report, b *pem.Block, n int) error {
	switch b.Type {
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("PEM block %d (CERTIFICATE): %w", n, err)
		}
		in.addCert(r, c)
	case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			return fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		r.Requests = append(r.Requests, requestInfo(csr))
	case "X509 CRL":
		crl, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return fmt.Errorf("PEM block %d (X509 CRL): %w", n, err)
		}
		r.CRLs = append(r.CRLs, in.crlInfo(crl))
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		if err := in.addPrivateKeyPEM(r, b); err != nil {
			return fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		var pub any
		var err error
		if b.Type == "PUBLIC KEY" {
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		} else {
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		}
		if err != nil {
			return fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		r.PublicKeys = append(r.PublicKeys, keyInfo(pub))
	case "PKCS12":
		return in.pkcs12(r, b.Bytes)
	default:
		r.Skipped = append(r.Skipped, b.Type)
	}
	return nil
}

func (in *inspector) der(data []byte) (*Report, error) {
	r := &Report{Encoding: "DER"}
	if certs, err := x509.ParseCertificates(data); err == nil && len(certs) > 0 {
		for _, c := range certs {
			in.addCert(r, c)
		}
		return r, nil
	}
	if csr, err := x509.ParseCertificateRequest(data); err == nil {
		r.Requests = append(r.Requests, requestInfo(csr))
		return r, nil
	}
	if crl, err := x509.ParseRevocationList(data); err == nil {
		r.CRLs = append(r.CRLs, in.crlInfo(crl))
		return r, nil
	}
	if isPKCS12(data) {
		return r, in.pkcs12(r, data)
	}
	for _, typ := range []string{"PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"} {
		if key, err := parsePlainKey(typ, data); err == nil {
			in.addKey(r, PrivateKeyInfo{Format: keyFormat(typ)}, key)
			return r, nil
		}
	}
	if _, ok := parseEncryptedPKCS8(data); ok {
		return r, in.addPrivateKeyPEM(r, &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: data})
	}
	if pub, err := x509.ParsePKIXPublicKey(data); err == nil {
		r.PublicKeys = append(r.PublicKeys, keyInfo(pub))
		return r, nil
	}
	return nil, fmt.Errorf("%w (not PEM, and no DER structure matched; is it truncated?)", ErrUnknownFormat)
}

func (in *inspector) addCert(r *Report, c *x509.Certificate) {
	r.Certificates = append(r.Certificates, certificateInfo(c, in.now))
	in.certs = append(in.certs, c)
}

func (in *inspector) addKey(r *Report, info PrivateKeyInfo, key crypto.Signer) {
	if key != nil {
		ki := keyInfo(key.Public())
		info.Key = &ki
	}
	r.PrivateKeys = append(r.PrivateKeys, info)
	in.keys = append(in.keys, key)
}

func keyFormat(pemType string) string {
	switch pemType {
	case "EC PRIVATE KEY":
		return "SEC 1"
	case "RSA PRIVATE KEY":
		return "PKCS#1"
	}
	return "PKCS#8"
}

func parsePlainKey(pemType string, der []byte) (crypto.Signer, error) {
	var key any
	var err error
	switch pemType {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(der)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
	default:
		return nil, fmt.Errorf("unexpected key block %s", pemType)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return s, nil
}

func (in *inspector) addPrivateKeyPEM(r *Report, b *pem.Block) error {
	// Legacy OpenSSL PEM encryption: the headers say how, and we do not
	// decrypt it (pki.ParsePrivateKeyPEM refuses it too).
	if b.Headers["Proc-Type"] != "" {
		info := PrivateKeyInfo{Format: keyFormat(b.Type), Encrypted: true, Encryption: "legacy PEM encryption"}
		if dek := b.Headers["DEK-Info"]; dek != "" {
			cipher, _, _ := strings.Cut(dek, ",")
			info.Encryption += " (" + cipher + ")"
		}
		switch b.Type {
		case "EC PRIVATE KEY":
			info.Key = &KeyInfo{Algorithm: "ECDSA"}
		case "RSA PRIVATE KEY":
			info.Key = &KeyInfo{Algorithm: "RSA"}
		}
		r.PrivateKeys = append(r.PrivateKeys, info)
		in.keys = append(in.keys, nil)
		return nil
	}
	if b.Type != "ENCRYPTED PRIVATE KEY" {
		key, err := parsePlainKey(b.Type, b.Bytes)
		if err != nil {
			return err
		}
		in.addKey(r, PrivateKeyInfo{Format: keyFormat(b.Type)}, key)
		return nil
	}
	info := PrivateKeyInfo{Format: "PKCS#8", Encrypted: true}
	epki, ok := parseEncryptedPKCS8(b.Bytes)
	if !ok {
		return errors.New("malformed encrypted PKCS#8 structure")
	}
	info.Encryption = describeEncryption(epki.Algorithm)
	pw, err := in.secret()
	switch {
	case errors.Is(err, pki.ErrPasswordRequired) || (err == nil && len(pw) == 0):
		in.addKey(r, info, nil)
		return nil
	case err != nil:
		return err
	}
	key, err := pki.ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: b.Bytes}), pw)
	if err != nil {
		return err
	}
	in.addKey(r, info, key)
	return nil
}

func (in *inspector) pkcs12(r *Report, der []byte) error {
	desc, err := describePKCS12(der)
	if err != nil {
		return fmt.Errorf("PKCS#12: %w", err)
	}
	r.PKCS12 = desc
	// An empty password first: files made for import without one need no
	// prompt.
	key, leaf, cas, err := pkcs12.DecodeChain(der, "")
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		pw, perr := in.secret()
		if perr == nil && len(pw) == 0 {
			perr = pki.ErrPasswordRequired
		}
		if perr != nil {
			return fmt.Errorf("PKCS#12 file is password protected: %w", perr)
		}
		key, leaf, cas, err = pkcs12.DecodeChain(der, string(pw))
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			return fmt.Errorf("PKCS#12: %w", pki.ErrBadPassword)
		}
	}
	if err != nil {
		return fmt.Errorf("PKCS#12: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("PKCS#12: unsupported private key type %T", key)
	}
	// DecodeChain takes the first certificate bag as the leaf; put the one
	// the key belongs to first, whatever order the file used.
	all := append([]*x509.Certificate{leaf}, cas...)
	for i, c := range all {
		if pki.KeyMatches(c, signer) == nil {
			all[0], all[i] = all[i], all[0]
			break
		}
	}
	for _, c := range all {
		in.addCert(r, c)
	}
	in.addKey(r, PrivateKeyInfo{Format: "PKCS#12", Encrypted: desc.KeyEncryption != "none", Encryption: desc.KeyEncryption}, signer)
	return nil
}

func reportType(r *Report) string {
	kinds := 0
	var t string
	count := func(n int, typ string) {
		if n > 0 {
			kinds++
			t = typ
		}
	}
	count(len(r.Certificates), TypeCertificate)
	count(len(r.Requests), TypeRequest)
	count(len(r.CRLs), TypeCRL)
	count(len(r.PrivateKeys), TypePrivateKey)
	count(len(r.PublicKeys), TypePublicKey)
	switch {
	case r.PKCS12 != nil:
		return TypePKCS12
	case kinds > 1:
		return TypeBundle
	case t == TypeCertificate && len(r.Certificates) > 1:
		return TypeCertificateChain
	}
	return t
}

// matchKeys records which certificate each decrypted key belongs to.
func matchKeys(r *Report, keys []crypto.Signer, certs []*x509.Certificate) {
	for i, k := range keys {
		if k == nil {
			continue
		}
		for j, c := range certs {
			if pki.KeyMatches(c, k) == nil {
				r.PrivateKeys[i].MatchesCertificate = r.Certificates[j].Subject
				break
			}
		}
	}
}

func certificateInfo(c *x509.Certificate, now time.Time) CertificateInfo {
	ci := CertificateInfo{
		Subject:               nameString(c.RawSubject, c.Subject),
		CommonName:            c.Subject.CommonName,
		Groups:                c.Subject.OrganizationalUnit,
		DNSNames:              c.DNSNames,
		Emails:                c.EmailAddresses,
		Issuer:                nameString(c.RawIssuer, c.Issuer),
		SelfSigned:            pki.IsSelfSigned(c),
		Serial:                c.SerialNumber.Text(16),
		NotBefore:             c.NotBefore,
		NotAfter:              c.NotAfter,
		DaysLeft:              pki.DaysLeft(c.NotAfter, now),
		IsCA:                  c.BasicConstraintsValid && c.IsCA,
		KeyUsage:              keyUsageNames(c.KeyUsage),
		Key:                   keyInfo(c.PublicKey),
		SignatureAlgorithm:    signatureAlgorithm(c.SignatureAlgorithm),
		Fingerprint:           pki.Fingerprint(c),
		SPKIPin:               pki.SPKIPin(c),
		SubjectKeyID:          colonHex(c.SubjectKeyId),
		AuthorityKeyID:        colonHex(c.AuthorityKeyId),
		CRLDistributionPoints: c.CRLDistributionPoints,
	}
	ci.IPAddresses = ipStrings(c.IPAddresses)
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, u.String())
	}
	switch {
	case now.Before(c.NotBefore):
		ci.Status = pki.StatusNotYetValid
	case now.After(c.NotAfter):
		ci.Status = pki.StatusExpired
	default:
		ci.Status = pki.StatusValid
	}
	// x509 encodes "no limit" as -1, and 0 with MaxPathLenZero unset too.
	if ci.IsCA && (c.MaxPathLen > 0 || (c.MaxPathLen == 0 && c.MaxPathLenZero)) {
		n := c.MaxPathLen
		ci.MaxPathLen = &n
	}
	for _, u := range c.ExtKeyUsage {
		ci.ExtKeyUsage = append(ci.ExtKeyUsage, pki.ExtKeyUsageName(u))
	}
	for _, oid := range c.UnknownExtKeyUsage {
		ci.ExtKeyUsage = append(ci.ExtKeyUsage, oid.String())
	}
	ci.NameConstraints = nameConstraints(c)
	return ci
}

func nameConstraints(c *x509.Certificate) *NameConstraints {
	nc := &NameConstraints{
		Critical:        c.PermittedDNSDomainsCritical,
		PermittedDNS:    c.PermittedDNSDomains,
		ExcludedDNS:     c.ExcludedDNSDomains,
		PermittedEmails: c.PermittedEmailAddresses,
		ExcludedEmails:  c.ExcludedEmailAddresses,
		PermittedURIs:   c.PermittedURIDomains,
		ExcludedURIs:    c.ExcludedURIDomains,
	}
	for _, n := range c.PermittedIPRanges {
		nc.PermittedIPs = append(nc.PermittedIPs, n.String())
	}
	for _, n := range c.ExcludedIPRanges {
		nc.ExcludedIPs = append(nc.ExcludedIPs, n.String())
	}
	if len(nc.PermittedDNS)+len(nc.ExcludedDNS)+len(nc.PermittedIPs)+len(nc.ExcludedIPs)+
		len(nc.PermittedEmails)+len(nc.ExcludedEmails)+len(nc.PermittedURIs)+len(nc.ExcludedURIs) == 0 {
		return nil
	}
	return nc
}

func requestInfo(csr *x509.CertificateRequest) RequestInfo {
	ri := RequestInfo{
		Subject:            nameString(csr.RawSubject, csr.Subject),
		CommonName:         csr.Subject.CommonName,
		Groups:             csr.Subject.OrganizationalUnit,
		DNSNames:           csr.DNSNames,
		IPAddresses:        ipStrings(csr.IPAddresses),
		Emails:             csr.EmailAddresses,
		Key:                keyInfo(csr.PublicKey),
		SignatureAlgorithm: signatureAlgorithm(csr.SignatureAlgorithm),
	}
	for _, u := range csr.URIs {
		ri.URIs = append(ri.URIs, u.String())
	}
	if err := csr.CheckSignature(); err != nil {
		ri.SignatureError = err.Error()
	} else {
		ri.SignatureValid = true
	}
	return ri
}

func (in *inspector) crlInfo(crl *x509.RevocationList) CRLInfo {
	ci := CRLInfo{
		Issuer:             nameString(crl.RawIssuer, crl.Issuer),
		ThisUpdate:         crl.ThisUpdate,
		SignatureAlgorithm: signatureAlgorithm(crl.SignatureAlgorithm),
		AuthorityKeyID:     colonHex(crl.AuthorityKeyId),
		Revoked:            []RevokedEntry{},
	}
	if crl.Number != nil {
		ci.Number = crl.Number.String()
	}
	if !crl.NextUpdate.IsZero() {
		next := crl.NextUpdate
		ci.NextUpdate = &next
		ci.Stale = in.now.After(next)
	}
	for _, e := range crl.RevokedCertificateEntries {
		ci.Revoked = append(ci.Revoked, RevokedEntry{
			Serial:    e.SerialNumber.Text(16),
			RevokedAt: e.RevocationTime,
			Reason:    pki.ReasonName(e.ReasonCode),
		})
	}
	return ci
}

func keyInfo(pub any) KeyInfo {
	var k KeyInfo
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		k = KeyInfo{Algorithm: "ECDSA", Curve: p.Curve.Params().Name, Bits: p.Curve.Params().BitSize}
	case *rsa.PublicKey:
		k = KeyInfo{Algorithm: "RSA", Bits: p.N.BitLen()}
	case ed25519.PublicKey:
		k = KeyInfo{Algorithm: "Ed25519", Bits: 256}
	case *ecdh.PublicKey:
		k = KeyInfo{Algorithm: "ECDH", Curve: fmt.Sprint(p.Curve())}
	default:
		k = KeyInfo{Algorithm: fmt.Sprintf("%T", pub)}
	}
	if der, err := x509.MarshalPKIXPublicKey(pub); err == nil {
		sum := sha256.Sum256(der)
		k.SPKIPin = base64.StdEncoding.EncodeToString(sum[:])
	}
	return k
}

// nameString renders a distinguished name as encoded (RFC 4514 order,
// last RDN first), not as pkix.Name regroups it, so that two OU RDNs made
// by openssl do not show up as one multi-valued RDN.
func nameString(raw []byte, parsed pkix.Name) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &seq); err == nil && len(rest) == 0 {
		return seq.String()
	}
	return parsed.String()
}

func signatureAlgorithm(a x509.SignatureAlgorithm) string {
	if a == x509.UnknownSignatureAlgorithm {
		return "unknown"
	}
	return a.String()
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func colonHex(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	h := strings.ToUpper(hex.EncodeToString(b))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

var keyUsageBits = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "digitalSignature"},
	{x509.KeyUsageContentCommitment, "contentCommitment"},
	{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
	{x509.KeyUsageDataEncipherment, "dataEncipherment"},
	{x509.KeyUsageKeyAgreement, "keyAgreement"},
	{x509.KeyUsageCertSign, "keyCertSign"},
	{x509.KeyUsageCRLSign, "cRLSign"},
	{x509.KeyUsageEncipherOnly, "encipherOnly"},
	{x509.KeyUsageDecipherOnly, "decipherOnly"},
}

// keyUsageNames uses the RFC 5280 names, which are also what openssl's
// configuration files accept.
func keyUsageNames(u x509.KeyUsage) []string {
	var out []string
	for _, b := range keyUsageBits {
		if u&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	return out
}

// ASN.1 shapes needed to describe (not decrypt) PKCS#5 v1 and PKCS#12
// protection, after RFC 8018 and RFC 7292; those of PKCS#8 and PBES2, which
// pki reads too, are in internal/pbe.
type (
	pbeParams struct {
		Salt       []byte
		Iterations int
	}
	pfxPDU struct {
		Version  int
		AuthSafe contentInfo
		MacData  macData `asn1:"optional"`
	}
	contentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
	}
	macData struct {
		Mac struct {
			Algorithm pbe.AlgorithmIdentifier
			Digest    []byte
		}
		MacSalt    []byte
		Iterations int `asn1:"optional,default:1"`
	}
	encryptedData struct {
		Version int
		Info    struct {
			ContentType asn1.ObjectIdentifier
			Algorithm   pbe.AlgorithmIdentifier
			Content     []byte `asn1:"tag:0,optional"`
		}
	}
	safeBag struct {
		ID         asn1.ObjectIdentifier
		Value      asn1.RawValue   `asn1:"tag:0,explicit"`
		Attributes []asn1.RawValue `asn1:"set,optional"`
	}
)

var (
	oidPBMAC1         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidData           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidShroudedKeyBag = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}

	// Names as openssl prints them, so the two tools' output compare.
	algNames = map[string]string{
		"1.2.840.113549.1.12.1.1": "PBE-SHA1-RC4-128",
		"1.2.840.113549.1.12.1.2": "PBE-SHA1-RC4-40",
		"1.2.840.113549.1.12.1.3": "PBE-SHA1-3DES",
		"1.2.840.113549.1.12.1.4": "PBE-SHA1-2DES",
		"1.2.840.113549.1.12.1.5": "PBE-SHA1-RC2-128",
		"1.2.840.113549.1.12.1.6": "PBE-SHA1-RC2-40",
		"1.2.840.113549.1.5.3":    "PBE-MD5-DES",
		"1.2.840.113549.1.5.10":   "PBE-SHA1-DES",
		"1.2.840.113549.2.7":      "HMAC-SHA1",
		"1.2.840.113549.2.8":      "HMAC-SHA224",
		"1.2.840.113549.2.9":      "HMAC-SHA256",
		"1.2.840.113549.2.10":     "HMAC-SHA384",
		"1.2.840.113549.2.11":     "HMAC-SHA512",
		"2.16.840.1.101.3.4.1.2":  "AES-128-CBC",
		"2.16.840.1.101.3.4.1.22": "AES-192-CBC",
		"2.16.840.1.101.3.4.1.42": "AES-256-CBC",
		"1.2.840.113549.3.7":      "DES-EDE3-CBC",
		"1.3.14.3.2.26":           "SHA1",
		"2.16.840.1.101.3.4.2.1":  "SHA256",
		"2.16.840.1.101.3.4.2.2":  "SHA384",
		"2.16.840.1.101.3.4.2.3":  "SHA512",
		"1.3.6.1.4.1.11591.4.11":  "scrypt",
		"1.2.840.113549.1.5.13":   "PBES2",
		"1.2.840.113549.1.5.14":   "PBMAC1",
		"1.2.840.113549.1.5.12":   "PBKDF2",
		"2.16.840.1.101.3.4.1.46": "AES-256-GCM",
	}
)

func algName(oid asn1.ObjectIdentifier) string {
	if n, ok := algNames[oid.String()]; ok {
		return n
	}
	return oid.String()
}

// parseEncryptedPKCS8 recognises an EncryptedPrivateKeyInfo whose
// algorithm is a known password-based scheme, so that random DER is not
// mistaken for one.
func parseEncryptedPKCS8(der []byte) (*pbe.EncryptedPrivateKeyInfo, bool) {
	var e pbe.EncryptedPrivateKeyInfo
	rest, err := asn1.Unmarshal(der, &e)
	if err != nil || len(rest) != 0 {
		return nil, false
	}
	// PKCS#5 v1 schemes (1.2.840.113549.1.5.x), PBES2, and PKCS#12 PBE
	// (1.2.840.113549.1.12.1.x).
	oid := e.Algorithm.Algorithm.String()
	if !strings.HasPrefix(oid, "1.2.840.113549.1.5.") && !strings.HasPrefix(oid, "1.2.840.113549.1.12.1.") {
		return nil, false
	}
	return &e, true
}

// describeEncryption names a password-based encryption scheme the way
// openssl does, e.g. "PBES2, PBKDF2-HMAC-SHA256 (600000 iterations),
// AES-256-CBC" or "PBE-SHA1-3DES (2048 iterations)".
func describeEncryption(alg pbe.AlgorithmIdentifier) string {
	if !alg.Algorithm.Equal(pbe.OIDPBES2) {
		var p pbeParams
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err == nil && p.Iterations > 0 {
			return fmt.Sprintf("%s (%s)", algName(alg.Algorithm), iterations(p.Iterations))
		}
		return algName(alg.Algorithm)
	}
	var p pbe.PBES2Params
	if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil {
		return "PBES2 (unreadable parameters)"
	}
	kdf := algName(p.KDF.Algorithm)
	switch {
	case p.KDF.Algorithm.Equal(pbe.OIDPBKDF2):
		var k pbe.PBKDF2Params
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &k); err == nil {
			prf := "HMAC-SHA1" // the RFC 8018 default when absent
			if len(k.PRF.Algorithm) > 0 {
				prf = algName(k.PRF.Algorithm)
			}
			kdf = fmt.Sprintf("PBKDF2-%s (%s)", prf, iterations(k.Iterations))
		}
	case p.KDF.Algorithm.Equal(pbe.OIDScrypt):
		var s pbe.ScryptParams
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &s); err == nil {
			kdf = fmt.Sprintf("scrypt (N=%d, r=%d, p=%d)", s.Cost, s.BlockSize, s.Parallelism)
		}
	}
	return fmt.Sprintf("PBES2, %s, %s", kdf, algName(p.Scheme.Algorithm))
}

func iterations(n int) string {
	if n == 1 {
		return "1 iteration"
	}
	return fmt.Sprintf("%d iterations", n)
}

// isPKCS12 reports whether der starts like a PFX: version 3 and a data
// content type. Certificates, CSRs, CRLs and keys all fail this.
func isPKCS12(der []byte) bool {
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(der, &pfx); err != nil {
		return false
	}
	return pfx.Version == 3 && (pfx.AuthSafe.ContentType.Equal(oidData) || pfx.AuthSafe.ContentType.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}))
}

// describePKCS12 walks a PFX's outer, unencrypted structure to say which
// MAC and ciphers protect it. It needs no password.
func describePKCS12(der []byte) (*PKCS12Info, error) {
	var pfx pfxPDU
	if rest, err := asn1.Unmarshal(der, &pfx); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("malformed PFX structure (truncated?)")
	}
	if !pfx.AuthSafe.ContentType.Equal(oidData) {
		return nil, errors.New("only password-integrity PKCS#12 files are supported (this one uses public-key integrity)")
	}
	info := &PKCS12Info{MAC: "none", CertEncryption: "none", KeyEncryption: "none"}
	if mac := pfx.MacData.Mac.Algorithm.Algorithm; len(mac) > 0 {
		if mac.Equal(oidPBMAC1) {
			info.MAC = "PBMAC1"
		} else {
			info.MAC = fmt.Sprintf("HMAC-%s (%s)", algName(mac), iterations(pfx.MacData.Iterations))
			info.Legacy = info.Legacy || algName(mac) == "SHA1"
		}
	}
	var octets []byte
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &octets); err != nil {
		return nil, fmt.Errorf("malformed PFX content: %w", err)
	}
	var safe []contentInfo
	if _, err := asn1.Unmarshal(octets, &safe); err != nil {
		return nil, fmt.Errorf("malformed PFX authenticated safe: %w", err)
	}
	for _, ci := range safe {
		switch {
		case ci.ContentType.Equal(oidEncryptedData):
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				return nil, fmt.Errorf("malformed PFX encrypted data: %w", err)
			}
			// Certificates live in encrypted data in every common layout;
			// keys are shrouded bags inside plain data.
			info.CertEncryption = describeEncryption(ed.Info.Algorithm)
			info.Legacy = info.Legacy || !ed.Info.Algorithm.Algorithm.Equal(pbe.OIDPBES2)
		case ci.ContentType.Equal(oidData):
			var inner []byte
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &inner); err != nil {
				return nil, fmt.Errorf("malformed PFX data: %w", err)
			}
			var bags []safeBag
			if _, err := asn1.Unmarshal(inner, &bags); err != nil {
				return nil, fmt.Errorf("malformed PFX safe contents: %w", err)
			}
			for _, b := range bags {
				if !b.ID.Equal(oidShroudedKeyBag) {
					continue
				}
				var e pbe.EncryptedPrivateKeyInfo
				if _, err := asn1.Unmarshal(b.Value.Bytes, &e); err != nil {
					return nil, fmt.Errorf("malformed PFX key bag: %w", err)
				}
				info.KeyEncryption = describeEncryption(e.Algorithm)
				info.Legacy = info.Legacy || !e.Algorithm.Algorithm.Equal(pbe.OIDPBES2)
			}
		}
	}
	return info, nil
}
