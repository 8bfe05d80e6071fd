package osstore

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Kind is the OS store a Ref names.
type Kind int

const (
	// Keychain is the macOS keychain search list (the user's login
	// keychain, then the System keychain), searched through
	// Security.framework.
	Keychain Kind = iota + 1
	// CertStore is a Windows certificate store ("MY", the personal store,
	// by default) of the current user or of the machine, with keys held by
	// CNG (a software key storage provider, a TPM or a smart card).
	CertStore
)

// String returns the reference prefix: "keychain" or "certstore".
func (k Kind) String() string {
	switch k {
	case Keychain:
		return "keychain"
	case CertStore:
		return "certstore"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Location is where in Windows a certificate store is looked for.
type Location int

const (
	// AnyLocation searches the current user's store, then the machine's.
	AnyLocation Location = iota
	// CurrentUser is CERT_SYSTEM_STORE_CURRENT_USER ("user/" in a reference).
	CurrentUser
	// LocalMachine is CERT_SYSTEM_STORE_LOCAL_MACHINE ("machine/"); its keys
	// are usually readable only by administrators and services.
	LocalMachine
)

// String returns the name a reference uses: "user", "machine", or "" for
// AnyLocation.
func (l Location) String() string {
	switch l {
	case CurrentUser:
		return "user"
	case LocalMachine:
		return "machine"
	}
	return ""
}

// Ref is a parsed key reference: which OS store, and how to pick one
// identity (a certificate with its private key) in it. Exactly one of
// Name, SHA1 and SHA256 is set.
type Ref struct {
	Kind Kind
	// Location and Store are for CertStore only: AnyLocation and "MY"
	// unless the reference names them.
	Location Location
	Store    string
	// Name selects identities whose certificate's subject common name, or
	// whose label in the store (macOS keychain label, Windows friendly
	// name), equals it, ignoring case.
	Name string
	// SHA1 or SHA256 select the identity whose certificate's DER encoding
	// has this hash (its "thumbprint" or "fingerprint").
	SHA1   []byte
	SHA256 []byte
}

// IsRef reports whether s is meant as a reference to an OS store (it
// starts with "keychain:" or "certstore:"), valid or not: such a string
// should be given to Parse, whose error then says what is wrong with it,
// never be read as a file name.
func IsRef(s string) bool {
	_, _, ok := cutScheme(s)
	return ok
}

func cutScheme(s string) (Kind, string, bool) {
	if rest, ok := cutPrefixFold(s, "keychain:"); ok {
		return Keychain, rest, true
	}
	if rest, ok := cutPrefixFold(s, "certstore:"); ok {
		return CertStore, rest, true
	}
	return 0, "", false
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// Parse parses a key reference:
//
//	keychain:NAME                    macOS: the identity named NAME
//	keychain:sha1=HEX                macOS: by the certificate's SHA-1 thumbprint
//	keychain:sha256=HEX              macOS: by its SHA-256 fingerprint
//	certstore:NAME                   Windows: user's, then machine's MY store
//	certstore:sha1=HEX               Windows: by thumbprint (as certmgr and
//	                                 PowerShell's Cert: drive show it)
//	certstore:sha256=HEX
//	certstore:user/my/NAME           Windows: only the current user's MY store
//	certstore:machine/my/sha1=HEX    Windows: only the machine's MY store
//
// NAME is compared, ignoring case, with the certificate's subject common
// name and with the store's label for it. HEX may be upper or lower case
// and may contain ':' or spaces between digits (openssl prints
// fingerprints with colons). Parse only reads the string; it never touches
// the system, so it can validate a configuration on any OS.
func Parse(s string) (Ref, error) {
	kind, rest, ok := cutScheme(s)
	if !ok {
		return Ref{}, fmt.Errorf("%q: %w", s, ErrNotRef)
	}
	r := Ref{Kind: kind}
	fail := func(format string, a ...any) (Ref, error) {
		return Ref{}, fmt.Errorf("key reference %q: %s", s, fmt.Sprintf(format, a...))
	}
	if kind == CertStore {
		r.Store = "MY"
		loc, after, found := strings.Cut(rest, "/")
		if found {
			switch strings.ToLower(loc) {
			case "user", "currentuser":
				r.Location = CurrentUser
			case "machine", "localmachine":
				r.Location = LocalMachine
			}
		}
		if r.Location != AnyLocation {
			store, sel, found := strings.Cut(after, "/")
			if !found {
				return fail("want certstore:%s/STORE/NAME (STORE is usually \"my\")", loc)
			}
			if store == "" || !isStoreName(store) {
				return fail("store name %q: want letters, digits, '-' or '_' (usually \"my\")", store)
			}
			r.Store = strings.ToUpper(store)
			rest = sel
		}
	}
	if rest == "" {
		return fail("no name or thumbprint after %q", strings.TrimSuffix(s, rest))
	}
	if v, ok := cutPrefixFold(rest, "sha1="); ok {
		h, err := parseHex(v, 20)
		if err != nil {
			return fail("sha1: %v", err)
		}
		r.SHA1 = h
		return r, nil
	}
	if v, ok := cutPrefixFold(rest, "sha256="); ok {
		h, err := parseHex(v, 32)
		if err != nil {
			return fail("sha256: %v", err)
		}
		r.SHA256 = h
		return r, nil
	}
	if strings.ContainsRune(rest, 0) {
		return fail("name contains a NUL byte")
	}
	if strings.TrimSpace(rest) != rest {
		// A stray space from a config file would make a name that never
		// matches; say so rather than report "not found" later.
		return fail("name %q has leading or trailing spaces", rest)
	}
	r.Name = rest
	return r, nil
}

func isStoreName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseHex decodes a thumbprint of n bytes, allowing ':' and ' ' between
// digits.
func parseHex(s string, n int) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "").Replace(s)
	for _, c := range clean {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return nil, fmt.Errorf("%q is not hexadecimal", s)
		}
	}
	if len(clean) != 2*n {
		return nil, fmt.Errorf("%d hex digits, want %d", len(clean), 2*n)
	}
	return hex.DecodeString(clean)
}

// String returns the reference in its canonical form (what Parse accepts
// and what errors name): lower-case thumbprints without separators, the
// store location and name only when they were given.
func (r Ref) String() string {
	var b strings.Builder
	b.WriteString(r.Kind.String())
	b.WriteByte(':')
	if r.Kind == CertStore && r.Location != AnyLocation {
		b.WriteString(r.Location.String())
		b.WriteByte('/')
		b.WriteString(strings.ToLower(r.Store))
		b.WriteByte('/')
	}
	switch {
	case r.SHA1 != nil:
		b.WriteString("sha1=" + hex.EncodeToString(r.SHA1))
	case r.SHA256 != nil:
		b.WriteString("sha256=" + hex.EncodeToString(r.SHA256))
	default:
		b.WriteString(r.Name)
	}
	return b.String()
}
