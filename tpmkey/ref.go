// Package tpmkey holds client private keys in a TPM 2.0 (Linux): an ECDSA
// P-256 signing key that never leaves the TPM, usable by crypto/tls for TLS
// 1.3 client authentication and by x509 for a CSR.
//
// A key is named by a reference:
//
//	tpm:[DEVICE]?handle=0x81000010[&pin-source=file:PATH]
//	tpm:[DEVICE]?blob=PATH[&pin-source=file:PATH]
//
// DEVICE is the absolute path of the TPM: a character device (default
// /dev/tpmrm0, the kernel's resource manager) or the unix socket of a software
// TPM (swtpm socket --server type=unixio,path=...), for trying things out.
//
// handle= names a key persisted in the TPM's NV memory at a persistent
// handle (0x81000000-0x81ffffff), as tpm2_evictcontrol and the tpm2 OpenSSL
// provider's "handle:0x81..." keys do. blob= names a file holding the key's
// public and (TPM-encrypted) private parts in the "TSS2 PRIVATE KEY" PEM
// format that tpm2-tss-engine, the tpm2 OpenSSL provider and ssh-tpm-agent
// use; the key is loaded under the storage root key (SRK) each time. The file
// is useless outside this TPM, but with an empty auth value anyone who can
// read it and open the TPM can sign with it, so it is kept 0600.
//
// pin-source= names a file whose content (a trailing newline trimmed) is the
// key's auth value, as RFC 7512's pin-source does for PKCS#11. Without it the
// key has an empty auth value. The auth value is sent to the TPM as a
// plaintext password session.
//
// Open loads an existing key; Generate creates one. Both return a *Key, a
// crypto.Signer and io.Closer whose Sign runs TPM2_Sign.
package tpmkey

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// Scheme is the prefix of every TPM key reference.
const Scheme = "tpm:"

// DefaultDevice is the TPM used when a reference names none: the kernel's
// resource manager, which lets several programs share the TPM and flushes a
// program's transient objects when it exits.
const DefaultDevice = "/dev/tpmrm0"

// Persistent handles the owner may use (TPM 2.0 Part 2, 7.5: 0x81xxxxxx).
const (
	minPersistent = 0x81000000
	maxPersistent = 0x81ffffff
)

// ErrBadRef is wrapped by every error Parse returns.
var ErrBadRef = errors.New("bad TPM key reference")

// Ref is a parsed key reference. Exactly one of Handle and Blob is set.
type Ref struct {
	// Device is the absolute path of the TPM character device or of a
	// swtpm unix socket.
	Device string
	// Handle is the persistent handle of the key, or 0.
	Handle uint32
	// Blob is the absolute path of the key file, or "".
	Blob string
	// PINFile is the absolute path of the file holding the key's auth
	// value, or "" for an empty auth value.
	PINFile string
}

// IsRef reports whether s is meant as a TPM key reference (it starts with
// "tpm:"), so that a caller can tell it from a key file path before parsing.
func IsRef(s string) bool { return strings.HasPrefix(s, Scheme) }

// Parse parses a reference of the form described in the package comment.
// Paths must be absolute (a daemon's working directory is not the user's);
// values may be percent-encoded (%26 for '&'). Errors wrap ErrBadRef and
// quote the reference, which holds no secret.
func Parse(ref string) (Ref, error) { return ParseIn(ref, "") }

// ParseIn is Parse for a reference in a configuration file: relative blob
// and pin-source paths are taken relative to dir (the file's directory, an
// absolute path), as the file's other paths are. The device path must
// still be absolute.
func ParseIn(ref, dir string) (Ref, error) {
	abs := func(p string) (string, bool) {
		if filepath.IsAbs(p) {
			return filepath.Clean(p), true
		}
		if dir == "" || !filepath.IsAbs(dir) {
			return "", false
		}
		return filepath.Join(dir, p), true
	}
	bad := func(format string, a ...any) (Ref, error) {
		return Ref{}, fmt.Errorf("%w %q: %s", ErrBadRef, ref, fmt.Sprintf(format, a...))
	}
	if !IsRef(ref) {
		return bad("does not start with %q", Scheme)
	}
	rest := strings.TrimPrefix(ref, Scheme)
	dev, query, ok := strings.Cut(rest, "?")
	if !ok || query == "" {
		return bad("needs ?handle=0x81... or ?blob=PATH")
	}
	var r Ref
	if dev == "" {
		dev = DefaultDevice
	}
	d, err := url.PathUnescape(dev)
	if err != nil {
		return bad("device: %v", err)
	}
	if !filepath.IsAbs(d) {
		return bad("device %q is not an absolute path", d)
	}
	r.Device = filepath.Clean(d)

	seen := map[string]bool{}
	for _, kv := range strings.Split(query, "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return bad("%q is not name=value", kv)
		}
		if seen[k] {
			return bad("%s given twice", k)
		}
		seen[k] = true
		// PathUnescape, not QueryUnescape: a '+' in a path is a '+'.
		val, err := url.PathUnescape(v)
		if err != nil {
			return bad("%s: %v", k, err)
		}
		switch k {
		case "handle":
			h, err := strconv.ParseUint(val, 0, 32)
			if err != nil {
				return bad("handle %q is not a number (e.g. 0x81000010)", val)
			}
			if h < minPersistent || h > maxPersistent {
				return bad("handle %#x is not a persistent handle (0x81000000-0x81ffffff)", h)
			}
			r.Handle = uint32(h)
		case "blob":
			p, ok := abs(val)
			if !ok {
				return bad("blob %q is not an absolute path", val)
			}
			r.Blob = p
		case "pin-source":
			p := strings.TrimPrefix(val, "file:")
			if strings.Contains(p, ":") && !filepath.IsAbs(p) && !strings.HasPrefix(val, "file:") {
				return bad("pin-source %q: only file: sources are supported", val)
			}
			// RFC 8089: file:///p is file:/p (Clean folds the
			// slashes); file://host/p names another machine.
			if strings.HasPrefix(p, "//") && !strings.HasPrefix(p, "///") {
				return bad("pin-source %q: file URIs with a host are not supported", val)
			}
			pin, ok := abs(p)
			if !ok {
				return bad("pin-source %q is not an absolute file path (pin-source=file:/etc/twoway/key.pin)", val)
			}
			r.PINFile = pin
		default:
			return bad("unknown attribute %q (known: handle, blob, pin-source)", k)
		}
	}
	switch {
	case r.Handle != 0 && r.Blob != "":
		return bad("give handle= or blob=, not both")
	case r.Handle == 0 && r.Blob == "":
		return bad("needs handle= or blob=")
	}
	return r, nil
}

// String returns the reference in the canonical form Parse accepts.
func (r Ref) String() string {
	var b strings.Builder
	b.WriteString(Scheme)
	b.WriteString(escape(r.Device))
	b.WriteByte('?')
	if r.Handle != 0 {
		fmt.Fprintf(&b, "handle=%#x", r.Handle)
	} else {
		b.WriteString("blob=" + escape(r.Blob))
	}
	if r.PINFile != "" {
		b.WriteString("&pin-source=file:" + escape(r.PINFile))
	}
	return b.String()
}

// escape percent-encodes what would end a value early; the rest stays
// readable.
func escape(p string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "?", "%3F").Replace(p)
}
