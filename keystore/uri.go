package keystore

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// URI is a parsed PKCS#11 URI (RFC 7512) naming a private key.
//
// Of the path attributes, token (the token's label), serial and slot-id
// select the token (serial first, then token, then slot-id, when several
// are given), object (CKA_LABEL) and id (CKA_ID) the key, and type must be
// "private" if given; manufacturer, model and the library-* and slot-*
// attributes that tools such as p11tool print are accepted and ignored.
// Of the query attributes, module-path names the PKCS#11 library to load
// and pin-source the file holding the PIN; both are required, as absolute
// paths, since a URI in a configuration file must not depend on the
// directory the daemon starts in. pin-value is refused: the PIN would sit
// in the configuration file and show wherever the reference does.
type URI struct {
	Token, Serial string
	SlotID        *int
	Object        string
	ID            []byte
	ModulePath    string
	PINFile       string

	raw string // as given; holds no PIN since pin-value is refused
}

// String returns the reference as given. It holds no PIN.
func (u *URI) String() string { return u.raw }

// ignoredAttrs are path attributes accepted and not used.
var ignoredAttrs = map[string]bool{
	"manufacturer": true, "model": true,
	"library-manufacturer": true, "library-description": true, "library-version": true,
	"slot-description": true, "slot-manufacturer": true,
}

// ParseURI parses a pkcs11: key reference. Its errors name the offending
// attribute, never the whole reference (which a mistyped pin-value could
// be part of).
func ParseURI(s string) (*URI, error) {
	const scheme = "pkcs11:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, errors.New(`pkcs11 URI: must start with "pkcs11:"`)
	}
	u := &URI{raw: s}
	path, query, _ := strings.Cut(s[len(scheme):], "?")
	seen := map[string]bool{}
	for _, attr := range split(path, ";") {
		name, val, err := attribute(attr, seen)
		if err != nil {
			return nil, err
		}
		switch {
		case name == "token":
			u.Token = string(val)
		case name == "serial":
			u.Serial = string(val)
		case name == "slot-id":
			n, err := strconv.Atoi(string(val))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("pkcs11 URI: slot-id %q is not a number", val)
			}
			u.SlotID = &n
		case name == "object":
			u.Object = string(val)
		case name == "id":
			u.ID = val
		case name == "type":
			if string(val) != "private" {
				return nil, fmt.Errorf("pkcs11 URI: type=%s: the key must be type=private (or leave type out)", val)
			}
		case ignoredAttrs[name], strings.HasPrefix(name, "x-"):
		case name == "pin-value", name == "pin-source", name == "module-path", name == "module-name":
			return nil, fmt.Errorf("pkcs11 URI: %s belongs in the query, after '?'", name)
		default:
			return nil, fmt.Errorf("pkcs11 URI: unknown path attribute %q (want token, serial, slot-id, object, id, type)", name)
		}
	}
	for _, attr := range split(query, "&") {
		name, val, err := attribute(attr, seen)
		if err != nil {
			return nil, err
		}
		switch {
		case name == "module-path":
			u.ModulePath = string(val)
		case name == "pin-source":
			p, err := pinFile(string(val))
			if err != nil {
				return nil, err
			}
			u.PINFile = p
		case name == "pin-value":
			return nil, errors.New("pkcs11 URI: pin-value is refused, as the PIN would be in the configuration for all to read: " +
				"put the PIN in a file (mode 0600) and name it with pin-source=file:/path")
		case name == "module-name":
			return nil, errors.New("pkcs11 URI: module-name is not supported: name the library by its file with module-path=/path/to/lib.so")
		case strings.HasPrefix(name, "x-"):
		default:
			return nil, fmt.Errorf("pkcs11 URI: unknown query attribute %q (want module-path, pin-source)", name)
		}
	}
	switch {
	case u.Token == "" && u.Serial == "" && u.SlotID == nil:
		return nil, errors.New("pkcs11 URI: no token: add token=LABEL (or serial=... or slot-id=...)")
	case u.Object == "" && len(u.ID) == 0:
		return nil, errors.New("pkcs11 URI: no key: add object=LABEL (or id=...)")
	case u.ModulePath == "":
		return nil, errors.New("pkcs11 URI: no PKCS#11 library: add ?module-path=/path/to/lib.so (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
	case !filepath.IsAbs(u.ModulePath):
		return nil, fmt.Errorf("pkcs11 URI: module-path %q must be an absolute path", u.ModulePath)
	case u.PINFile == "":
		return nil, errors.New("pkcs11 URI: no PIN: add pin-source=file:/path/to/pin-file (mode 0600, the PIN on its first line)")
	}
	return u, nil
}

// split splits s at sep, with no element for an empty s.
func split(s, sep string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, sep)
}

// attribute decodes one name=value pair, refusing a name seen before.
func attribute(attr string, seen map[string]bool) (string, []byte, error) {
	name, val, ok := strings.Cut(attr, "=")
	name = strings.ToLower(name)
	if !ok || name == "" {
		// Not quoted: it may be a PIN pasted in the wrong place.
		return "", nil, errors.New("pkcs11 URI: an attribute is not name=value (attributes are separated by ';' before the '?' and '&' after it)")
	}
	if seen[name] {
		return "", nil, fmt.Errorf("pkcs11 URI: %s given twice", name)
	}
	seen[name] = true
	v, err := url.PathUnescape(val)
	if err != nil {
		if name == "pin-value" {
			return "", nil, errors.New("pkcs11 URI: bad percent-encoding in pin-value")
		}
		return "", nil, fmt.Errorf("pkcs11 URI: %s: bad percent-encoding", name)
	}
	return name, []byte(v), nil
}

// pinFile returns the path a pin-source names: file:/path, file:///path
// or a bare absolute path. RFC 7512's "|command" form is refused: a key
// reference should not run programs.
func pinFile(src string) (string, error) {
	p := src
	if rest, ok := strings.CutPrefix(p, "file:"); ok {
		p = rest
		if h, ok := strings.CutPrefix(p, "//"); ok {
			// file://HOST/path: only the empty host (file:///path) is local.
			if !strings.HasPrefix(h, "/") {
				return "", fmt.Errorf("pkcs11 URI: pin-source %q: want file:/path or file:///path", src)
			}
			p = h
		}
	}
	if strings.HasPrefix(p, "|") {
		return "", errors.New("pkcs11 URI: pin-source commands (|...) are not supported: use pin-source=file:/path")
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("pkcs11 URI: pin-source %q must be an absolute path", src)
	}
	return p, nil
}

// check checks the files u names without loading the library.
func (u *URI) check() error {
	if fi, err := os.Stat(u.ModulePath); err != nil {
		return fmt.Errorf("pkcs11 URI: module-path: %w", err)
	} else if fi.IsDir() {
		return fmt.Errorf("pkcs11 URI: module-path %s is a directory, not a library", u.ModulePath)
	}
	_, err := readPIN(u.PINFile)
	return err
}

// readPIN reads the PIN from the first line of path, refusing a file that
// group or others can read, as key files are. The PIN is never part of
// an error.
func readPIN(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("pkcs11 URI: pin-source: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("pkcs11 URI: pin-source %s is not a regular file", path)
	}
	// Windows has no group/other mode bits; its ACLs are the installer's
	// business (as for key files in config).
	if mode := fi.Mode().Perm(); mode&0o077 != 0 && runtime.GOOS != "windows" {
		return "", fmt.Errorf("pkcs11 URI: PIN file %s is readable by group/others (mode %04o): chmod 600 it", path, uint32(mode))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("pkcs11 URI: pin-source: %w", err)
	}
	pin, _, _ := strings.Cut(string(data), "\n")
	pin = strings.TrimSuffix(pin, "\r")
	if pin == "" {
		return "", fmt.Errorf("pkcs11 URI: PIN file %s: first line is empty", path)
	}
	return pin, nil
}
