package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twoway/twoway/pki"
)

// Default leaf validity. 397 days is the longest lifetime browsers accept
// for server certificates; client certificates follow a yearly cycle.
const (
	DefaultServerDays = 397
	DefaultClientDays = 365
)

// IssueRequest describes a leaf certificate for (*CA).Issue, which also
// makes its key.
type IssueRequest struct {
	Kind Kind
	// Name is the host name or IP address of a server (also put in a SAN),
	// or the ID of a client (its common name).
	Name string
	// DNSNames and IPs are extra server names.
	DNSNames []string
	IPs      []net.IP
	// Emails are client e-mail addresses (SANs).
	Emails []string
	// Groups are client groups, one Subject OU each.
	Groups []string
	// Days of validity; 0 means DefaultServerDays or DefaultClientDays.
	Days int
	// KeyType of the new key; default ECDSA P-256.
	KeyType KeyType
	// KeyPassword encrypts the new key; empty leaves it unencrypted.
	KeyPassword []byte
	// OutDir receives NAME.crt and NAME.key; default the current directory.
	OutDir string
	// Force replaces existing files.
	Force bool
}

// Issued is a certificate a CA has issued and written.
type Issued struct {
	Cert *x509.Certificate
	// Chain is what follows Cert in CertFile: the issuing CAs, nearest
	// first, without the root.
	Chain    []*x509.Certificate
	CertFile string
	KeyFile  string // empty when signing a CSR: the key is the requester's
}

// leafSpec is the validated content of a leaf certificate: what the CA puts
// in, whoever asked.
type leafSpec struct {
	kind     Kind
	name     string
	dnsNames []string
	ips      []net.IP
	emails   []string
	groups   []string
}

// newLeafSpec applies the issuing policy: server certificates name hosts
// (DNS names and IPs, the name itself included); client certificates name a
// user or device by ID, with e-mail addresses and groups.
func newLeafSpec(kind Kind, name string, dnsNames []string, ips []net.IP, emails, groups []string) (*leafSpec, error) {
	s := &leafSpec{kind: kind, name: name}
	switch kind {
	case KindServer:
		if len(emails) > 0 || len(groups) > 0 {
			return nil, errorf(ErrInvalidName, "server certificates carry host names and IP addresses only, not e-mail addresses or groups")
		}
		if name == "" {
			return nil, fmt.Errorf("%w: server name is empty", ErrInvalidName)
		}
		if ip := net.ParseIP(name); ip != nil {
			s.ips = append(s.ips, ip)
		} else {
			n := strings.ToLower(name)
			if err := checkDNSName(n, false); err != nil {
				return nil, err
			}
			s.name = n
			s.dnsNames = append(s.dnsNames, n)
		}
		for _, d := range dnsNames {
			d = strings.ToLower(d)
			if err := checkDNSName(d, true); err != nil {
				return nil, err
			}
			if !slices.Contains(s.dnsNames, d) {
				s.dnsNames = append(s.dnsNames, d)
			}
		}
		for _, ip := range ips {
			if !slices.ContainsFunc(s.ips, ip.Equal) {
				s.ips = append(s.ips, ip)
			}
		}
	case KindClient:
		if len(dnsNames) > 0 || len(ips) > 0 {
			return nil, errorf(ErrInvalidName, "client certificates carry an ID, e-mail addresses and groups, not DNS names or IP addresses")
		}
		if err := checkClientID(name); err != nil {
			return nil, err
		}
		for _, e := range emails {
			if err := checkEmail(e); err != nil {
				return nil, err
			}
			if !slices.Contains(s.emails, e) {
				s.emails = append(s.emails, e)
			}
		}
		for _, g := range groups {
			if err := CheckGroup(g); err != nil {
				return nil, err
			}
			if !slices.Contains(s.groups, g) {
				s.groups = append(s.groups, g)
			}
		}
	default:
		return nil, fmt.Errorf("unknown certificate kind %q (want server or client)", kind)
	}
	return s, nil
}

// fileBase is the name of the files a spec is written to. Colons (IPv6)
// are replaced because some systems do not allow them in file names.
func (s *leafSpec) fileBase() string { return strings.ReplaceAll(s.name, ":", "_") }

func (s *leafSpec) defaultDays() int {
	if s.kind == KindServer {
		return DefaultServerDays
	}
	return DefaultClientDays
}

// template renders the certificate template. Usages come from the kind
// only: a requester cannot ask for more.
func (s *leafSpec) template(ca *CA, serial *big.Int, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         s.name,
			Organization:       ca.Cert.Subject.Organization,
			OrganizationalUnit: s.groups,
		},
		DNSNames:              s.dnsNames,
		IPAddresses:           s.ips,
		EmailAddresses:        s.emails,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		SubjectKeyId:          ski,
	}
	switch s.kind {
	case KindServer:
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if _, ok := pub.(*rsa.PublicKey); ok {
			// TLS 1.2 RSA key exchange encrypts the premaster secret to it.
			t.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	case KindClient:
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return t, nil
}

// leafValidity checks that ca may issue s now and returns its validity.
func (ca *CA) leafValidity(s *leafSpec, days int) (notBefore, notAfter time.Time, err error) {
	if ca.IsRoot() {
		return notBefore, notAfter, errorf(ErrRootIssue, "CA %q (%s) is a root CA: issue %s certificates from an intermediate CA (e.g. %s or %s)",
			ca.Name(), ca.Dir, s.kind, ServerCADir, ClientCADir)
	}
	if days < 0 {
		return notBefore, notAfter, fmt.Errorf("--days must be positive, not %d", days)
	}
	if days == 0 {
		days = s.defaultDays()
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := ca.checkUsable(now); err != nil {
		return notBefore, notAfter, err
	}
	return ca.validity(now, now.AddDate(0, 0, days), fmt.Sprintf("%s certificate %q", s.kind, s.name))
}

// issue signs a leaf for pub. It writes nothing.
func (ca *CA) issue(s *leafSpec, pub crypto.PublicKey, days int) (*x509.Certificate, error) {
	notBefore, notAfter, err := ca.leafValidity(s, days)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(ca.snapshot())
	if err != nil {
		return nil, err
	}
	tmpl, err := s.template(ca, serial, pub, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	usage := x509.ExtKeyUsageClientAuth
	if s.kind == KindServer {
		usage = x509.ExtKeyUsageServerAuth
	}
	return ca.sign(tmpl, pub, usage)
}

// Validate checks the request's names, groups and output files without
// touching the CA, so that a command can fail before asking for passwords.
func (req IssueRequest) Validate() error {
	_, _, _, err := req.plan()
	return err
}

func (req IssueRequest) plan() (s *leafSpec, certFile, keyFile string, err error) {
	if s, err = newLeafSpec(req.Kind, req.Name, req.DNSNames, req.IPs, req.Emails, req.Groups); err != nil {
		return nil, "", "", err
	}
	if req.Days < 0 {
		return nil, "", "", fmt.Errorf("--days must be positive, not %d", req.Days)
	}
	outDir := req.OutDir
	if outDir == "" {
		outDir = "."
	}
	certFile = filepath.Join(outDir, s.fileBase()+".crt")
	keyFile = filepath.Join(outDir, s.fileBase()+".key")
	if err := checkFree(req.Force, certFile, keyFile); err != nil {
		return nil, "", "", err
	}
	return s, certFile, keyFile, nil
}

// Issue makes a key and a certificate for it and writes them to
// OutDir/NAME.key (mode 0600) and OutDir/NAME.crt (the certificate followed
// by the issuing chain without the root). Existing files are refused unless
// req.Force; nothing is written unless everything succeeded.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	s, certFile, keyFile, err := req.plan()
	if err != nil {
		return nil, err
	}
	// Fail on the CA's side (expiry, lifetime, password) before spending
	// time on a key, which for RSA takes seconds.
	if _, _, err := ca.leafValidity(s, req.Days); err != nil {
		return nil, err
	}
	if err := ca.Unlock(); err != nil {
		return nil, err
	}
	key, err := GenerateKey(req.KeyType)
	if err != nil {
		return nil, err
	}
	cert, err := ca.issue(s, key.Public(), req.Days)
	if err != nil {
		return nil, err
	}
	keyPEM, err := MarshalPrivateKeyPEM(key, req.KeyPassword)
	if err != nil {
		return nil, err
	}
	chain := ca.chain()
	if err := ca.record(newRecord(cert, s.kind)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o755); err != nil {
		return nil, err
	}
	err = writeAll(req.Force,
		file{keyFile, keyPEM, 0o600},
		file{certFile, encodeCerts(append([]*x509.Certificate{cert}, chain...)...), 0o644})
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Chain: chain, CertFile: certFile, KeyFile: keyFile}, nil
}

// SignRequest asks a CA to sign a certificate request.
type SignRequest struct {
	CSR *x509.CertificateRequest
	// Kind decides usages and validity; names and groups come from the CSR
	// and are checked as for Issue. Other requested extensions are ignored.
	Kind Kind
	// Days of validity; 0 means the kind's default.
	Days int
	// Out receives the certificate followed by the issuing chain.
	Out string
	// Force replaces an existing Out.
	Force bool
	// Name asserts the subject name the CSR must ask for; Confirmed says
	// a person looked at the request instead (CSRSummary). One of them is
	// required: a CSR is written by whoever wants the certificate, and
	// its name is the identity the gateway will see.
	Name      string
	Confirmed bool
	// Groups are the groups the certificate carries: those the CSR asks
	// for are dropped unless listed here too, and the rest of Groups is
	// refused, so nobody gains a group by writing it into a CSR.
	Groups []string
}

// ErrUnconfirmed means a CSR was to be signed without its name asserted
// or confirmed.
var ErrUnconfirmed = errors.New("the certificate request's name was neither asserted (--name) nor confirmed")

// CSRSummary says what a certificate request asks for, for a person to
// confirm before signing.
func CSRSummary(csr *x509.CertificateRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name (CN): %q", csr.Subject.CommonName)
	if g := csr.Subject.OrganizationalUnit; len(g) > 0 {
		fmt.Fprintf(&b, "; groups (OU) asked for: %s (kept only with --group)", strings.Join(g, ", "))
	}
	if len(csr.EmailAddresses) > 0 {
		fmt.Fprintf(&b, "; e-mail: %s", strings.Join(csr.EmailAddresses, ", "))
	}
	if len(csr.DNSNames) > 0 {
		fmt.Fprintf(&b, "; DNS names: %s", strings.Join(csr.DNSNames, ", "))
	}
	for i, ip := range csr.IPAddresses {
		if i == 0 {
			b.WriteString("; IP addresses: ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(ip.String())
	}
	return b.String()
}

// Validate checks the request's signature, key, names and groups and the
// output file without touching the CA.
func (req SignRequest) Validate() error {
	_, err := req.plan()
	return err
}

func (req SignRequest) plan() (*leafSpec, error) {
	csr := req.CSR
	if csr == nil {
		return nil, fmt.Errorf("%w: no request", ErrBadCSR)
	}
	if req.Out == "" {
		return nil, fmt.Errorf("no output file for the certificate")
	}
	if req.Days < 0 {
		return nil, fmt.Errorf("--days must be positive, not %d", req.Days)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errorf(ErrBadCSR, "certificate request signature does not verify (%v)", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if len(csr.URIs) > 0 {
		return nil, fmt.Errorf("%w: URI names are not supported", ErrBadCSR)
	}
	name := csr.Subject.CommonName
	if name == "" && req.Kind == KindServer && len(csr.DNSNames) > 0 {
		name = csr.DNSNames[0]
	}
	switch {
	case req.Name != "" && req.Name != name:
		return nil, fmt.Errorf("%w: it asks for name %q, not %q", ErrBadCSR, name, req.Name)
	case req.Name == "" && !req.Confirmed:
		return nil, fmt.Errorf("%w; it asks for %s", ErrUnconfirmed, CSRSummary(csr))
	}
	for _, g := range req.Groups {
		if !slices.Contains(csr.Subject.OrganizationalUnit, g) {
			return nil, fmt.Errorf("%w: --group %q: the request does not ask for it", ErrBadCSR, g)
		}
	}
	s, err := newLeafSpec(req.Kind, name, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, req.Groups)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := checkFree(req.Force, req.Out); err != nil {
		return nil, err
	}
	return s, nil
}

// SignCSR checks a certificate request's signature and content and issues a
// certificate for its key. The CA decides usages and validity from
// req.Kind; names and groups come from the request and are checked as for
// Issue; any other requested extension is ignored.
func (ca *CA) SignCSR(req SignRequest) (*Issued, error) {
	s, err := req.plan()
	if err != nil {
		return nil, err
	}
	cert, err := ca.issue(s, req.CSR.PublicKey, req.Days)
	if err != nil {
		return nil, err
	}
	chain := ca.chain()
	if err := ca.record(newRecord(cert, s.kind)); err != nil {
		return nil, err
	}
	if err := WriteFile(req.Out, encodeCerts(append([]*x509.Certificate{cert}, chain...)...), 0o644, req.Force); err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Chain: chain, CertFile: req.Out}, nil
}

// checkPublicKey refuses keys too weak to certify.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: unsupported elliptic curve", ErrBadCSR)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key of %d bits is too small (minimum 2048)", ErrBadCSR, k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("%w: unsupported public key type %T", ErrBadCSR, pub)
}

// ParseCSR parses a PEM ("CERTIFICATE REQUEST") or DER certificate request.
// It does not check the signature; SignCSR does.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: expected CERTIFICATE REQUEST, found %s", pki.ErrNoPEM, b.Type)
		}
		data = b.Bytes
	} else if strings.Contains(string(data), "-----BEGIN") {
		return nil, fmt.Errorf("%w: truncated or corrupt PEM", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	return csr, nil
}

// LoadCSR reads a certificate request file.
func LoadCSR(path string) (*x509.CertificateRequest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return csr, nil
}

// CSRRequest describes a key and certificate request made by CreateCSR.
// Which names the CA accepts depends on the kind it signs the request as.
type CSRRequest struct {
	Name     string // client ID or server host name / IP address
	DNSNames []string
	IPs      []net.IP
	Emails   []string
	Groups   []string
	// KeyType of the new key; default ECDSA P-256.
	KeyType KeyType
	// KeyPassword encrypts the new key; empty leaves it unencrypted.
	KeyPassword []byte
	// Signer, if set, is the key to request for, made elsewhere (in a
	// token: see keystore); no key is made and no NAME.key written.
	Signer crypto.Signer
	// OutDir receives NAME.key and NAME.csr; default the current directory.
	OutDir string
	// Force replaces existing files.
	Force bool
}

// CSRResult is what CreateCSR wrote.
type CSRResult struct {
	CSR     *x509.CertificateRequest
	CSRFile string
	KeyFile string
}

// Validate checks the request's names, groups and output files.
func (req CSRRequest) Validate() error {
	_, _, err := req.plan()
	return err
}

func (req CSRRequest) plan() (csrFile, keyFile string, err error) {
	// The kind is decided when signing; check what holds for either.
	if net.ParseIP(req.Name) == nil {
		if err := checkClientID(req.Name); err != nil {
			return "", "", err
		}
	}
	for _, d := range req.DNSNames {
		if err := checkDNSName(strings.ToLower(d), true); err != nil {
			return "", "", err
		}
	}
	for _, e := range req.Emails {
		if err := checkEmail(e); err != nil {
			return "", "", err
		}
	}
	for _, g := range req.Groups {
		if err := CheckGroup(g); err != nil {
			return "", "", err
		}
	}
	outDir := req.OutDir
	if outDir == "" {
		outDir = "."
	}
	base := strings.ReplaceAll(req.Name, ":", "_")
	csrFile = filepath.Join(outDir, base+".csr")
	if req.Signer != nil {
		return csrFile, "", checkFree(req.Force, csrFile)
	}
	keyFile = filepath.Join(outDir, base+".key")
	if err := checkFree(req.Force, csrFile, keyFile); err != nil {
		return "", "", err
	}
	return csrFile, keyFile, nil
}

// CreateCSR makes a key and a certificate request for it, so that the key
// never leaves the machine that will use it: NAME.key (mode 0600) and
// NAME.csr in OutDir. With req.Signer, only NAME.csr, for that key.
func CreateCSR(req CSRRequest) (*CSRResult, error) {
	csrFile, keyFile, err := req.plan()
	if err != nil {
		return nil, err
	}
	key := req.Signer
	if key == nil {
		if key, err = GenerateKey(req.KeyType); err != nil {
			return nil, err
		}
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: req.Name, OrganizationalUnit: req.Groups},
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPs,
		EmailAddresses: req.Emails,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	files := []file{{csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644}}
	if req.Signer == nil {
		keyPEM, err := MarshalPrivateKeyPEM(key, req.KeyPassword)
		if err != nil {
			return nil, err
		}
		files = append([]file{{keyFile, keyPEM, 0o600}}, files...)
	}
	if err := os.MkdirAll(filepath.Dir(csrFile), 0o755); err != nil {
		return nil, err
	}
	err = writeAll(req.Force, files...)
	if err != nil {
		return nil, err
	}
	return &CSRResult{CSR: csr, CSRFile: csrFile, KeyFile: keyFile}, nil
}

// CheckGroup validates a group name: 1-64 characters of A-Z a-z 0-9 . _ -,
// so that groups compare exactly and read the same in logs and ACLs.
func CheckGroup(g string) error {
	if len(g) < 1 || len(g) > 64 || strings.IndexFunc(g, func(r rune) bool { return !isGroupRune(r) }) >= 0 {
		return fmt.Errorf("%w %q: want 1-64 characters of A-Z a-z 0-9 . _ -", ErrInvalidGroup, g)
	}
	return nil
}

func isGroupRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// checkClientID validates a client ID. It also names the certificate and
// key files, hence the narrow alphabet.
func checkClientID(id string) error {
	ok := len(id) >= 1 && len(id) <= 64 && id[0] != '.' && id[0] != '-'
	for _, r := range id {
		if !isGroupRune(r) && r != '@' && r != '+' {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%w: client ID %q: want 1-64 characters of A-Z a-z 0-9 . _ - @ +, not starting with . or -", ErrInvalidName, id)
	}
	return nil
}

// checkDNSName validates a host name (lowercase). With wildcard, a leading
// "*." label is allowed.
func checkDNSName(name string, wildcard bool) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: DNS name %q: %s", ErrInvalidName, name, why)
	}
	n := name
	if wildcard {
		n = strings.TrimPrefix(n, "*.")
	}
	if n == "" {
		return bad("empty")
	}
	if len(n) > 253 {
		return bad("longer than 253 characters")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return bad("each dot-separated label must have 1-63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("a label cannot start or end with '-'")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return bad(fmt.Sprintf("invalid character %q", r))
			}
		}
	}
	return nil
}

// checkEmail accepts a bare ASCII address such as alice@example.com.
func checkEmail(e string) error {
	a, err := mail.ParseAddress(e)
	if err != nil || a.Name != "" || a.Address != e || strings.IndexFunc(e, func(r rune) bool { return r > 0x7e }) >= 0 {
		return fmt.Errorf("%w: e-mail address %q", ErrInvalidName, e)
	}
	return nil
}
