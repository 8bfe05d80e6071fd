// Package config reads twoway's TOML configuration files, server.toml for
// the gateway and client.toml for the client, and validates them before
// anything touches the system.
//
// Every error names the file, the line and the key at fault, e.g.
//
//	server.toml:12: policy.rule[1].targets: invalid CIDR "10.0.0/8"
//
// Keys are written as dotted paths with zero-based indices for arrays and
// arrays of tables. Unknown keys are errors, so a typo cannot silently turn
// a setting off. Relative file paths are relative to the directory of the
// configuration file, and are made absolute when it is loaded.
//
// Role (server or client) is the one name for which daemon a file, a
// service, a control socket or a status is about; the other packages use it.
package config

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/pki"
)

// Errors that Error wraps, for callers that branch on the kind of problem.
var (
	ErrSyntax                 = errors.New("TOML syntax error")
	ErrUnknownKey             = errors.New("unknown key")
	ErrRequired               = errors.New("required")
	ErrInsecureKeyPermissions = errors.New("key file is readable by group/others")
)

// Error is a problem in a configuration, located as precisely as possible.
type Error struct {
	File string // the configuration file as given; "" for a config built in code
	Line int    // 1-based; 0 when unknown
	Key  string // dotted path such as "policy.rule[1].targets"; "" for syntax errors
	Err  error
}

// Error renders e as "file:line: key: problem", leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *Error) Unwrap() error { return e.Err }

// source is where a configuration was read from. A nil *source (a config
// built in code) yields errors with a key only.
type source struct {
	file   string // as given by the user, for messages
	dir    string // absolute directory, for relative paths
	layout *layout
}

func (s *source) err(key string, err error) *Error {
	e := &Error{Key: key, Err: err}
	if s != nil {
		e.File = s.file
		e.Line = s.layout.line(key)
	}
	return e
}

func (s *source) errf(key, format string, args ...any) *Error {
	return s.err(key, fmt.Errorf(format, args...))
}

// Log configures logging. Both sides share it.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `toml:"level"`
	// Format is text (logfmt-style key=value) or json. Default text.
	Format string `toml:"format"`
}

func defaultLog() Log { return Log{Level: "info", Format: "text"} }

// SlogLevel is Level as a slog.Level; call it after Validate.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

func (l Log) validate(src *source) error {
	switch strings.ToLower(l.Level) {
	case "debug", "info", "warn", "error":
	default:
		return src.errf("log.level", "invalid level %q (want debug, info, warn or error)", l.Level)
	}
	switch l.Format {
	case "text", "json":
	default:
		return src.errf("log.format", "invalid format %q (want text or json)", l.Format)
	}
	return nil
}

// decode reads path into doc (pre-filled with defaults) and returns the
// source for later errors. each is called after the main decode to decode
// arrays of tables element by element (see decodeArray).
func decode(path string, doc any, schema reflect.Type, each func(*decoder) error) (*source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{File: path, Err: fmt.Errorf("cannot read: %w", err)}
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	src := &source{file: path, dir: dir}

	// Parse once on its own so that every error from the typed decode
	// below is about types, not syntax.
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: path, Line: pe.Position.Line, Err: fmt.Errorf("%w: %s", ErrSyntax, pe.Message)}
		}
		return nil, &Error{File: path, Err: fmt.Errorf("%w: %v", ErrSyntax, err)}
	}
	src.layout = scanLayout(data)

	md, err := toml.Decode(string(data), doc)
	if err != nil {
		return nil, src.decodeError(err, "", 0)
	}
	d := &decoder{md: &md, src: src}
	if each != nil {
		if err := each(d); err != nil {
			return nil, err
		}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return nil, src.unknownKey(undecoded[0], schema)
	}
	return src, nil
}

// decoder decodes the elements of arrays of tables one by one, so that a
// type error can name the element it is in (toml's own errors cannot).
type decoder struct {
	md  *toml.MetaData
	src *source
}

func decodeArray[T any](d *decoder, key string, prims []toml.Primitive, init func() T) ([]T, error) {
	var out []T
	for i, p := range prims {
		v := init()
		if err := d.md.PrimitiveDecode(p, &v); err != nil {
			return nil, d.src.decodeError(err, key, i)
		}
		out = append(out, v)
	}
	return out, nil
}

// tomlKeyRE matches the errors toml v1.6 builds with MetaData.e:
// `toml: line 3 (last key "limits.max_sessions"): incompatible types: ...`.
var tomlKeyRE = regexp.MustCompile(`^toml: (?:line \d+ )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// decodeError turns an error from the typed decode into an *Error. When it
// came from element index of the array of tables at array, the key is
// rewritten to name that element.
func (src *source) decodeError(err error, array string, index int) *Error {
	key, msg := "", err.Error()
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key, msg = pe.LastKey, pe.Message
	} else if m := tomlKeyRE.FindStringSubmatch(msg); m != nil {
		if k, uerr := strconv.Unquote(m[1]); uerr == nil {
			key, msg = k, m[2]
		}
	}
	if array != "" && (key == array || strings.HasPrefix(key, array+".")) {
		key = indexPath(array, index) + key[len(array):]
	}
	if key == "" {
		return &Error{File: src.file, Err: err}
	}
	return src.err(key, errors.New(msg))
}

// unknownKey reports an undecoded key, naming the keys that are valid there.
func (src *source) unknownKey(k toml.Key, schema reflect.Type) *Error {
	plain := ""
	for _, part := range k {
		plain = joinPath(plain, part)
	}
	key := plain
	if indexed, ok := src.layout.first[plain]; ok {
		key = indexed
	}
	err := ErrUnknownKey
	if valid := validKeys(schema, k[:len(k)-1]); len(valid) > 0 {
		err = fmt.Errorf("%w (valid keys here: %s)", ErrUnknownKey, strings.Join(valid, ", "))
	}
	return src.err(key, err)
}

// validKeys lists the TOML keys of the struct reached from t by following
// parts, or nil if parts do not lead to a struct.
func validKeys(t reflect.Type, parts []string) []string {
	for {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		if len(parts) == 0 {
			break
		}
		f, ok := fieldByKey(t, parts[0])
		if !ok {
			return nil
		}
		t, parts = f.Type, parts[1:]
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if name := tomlName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); tomlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// resolve makes a path from the config file relative to its directory.
func (src *source) resolve(p string) string {
	if src == nil || p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(src.dir, p)
}

// resolveKey is resolve for a key setting, which may hold a key
// reference (pkcs11:...) rather than a path: a reference is left as it
// is, its paths being absolute, except that a tpm: reference's key and
// PIN files may be relative to the configuration's directory.
func (src *source) resolveKey(p string) string {
	if keystore.IsReference(p) {
		if src != nil {
			return keystore.ResolveIn(p, src.dir)
		}
		return p
	}
	return src.resolve(p)
}

// checkReadable checks that a file exists, is a regular file and can be
// read, and returns its contents.
func checkReadable(src *source, key, path string) ([]byte, error) {
	if path == "" {
		return nil, src.err(key, ErrRequired)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, src.err(key, fileError(path, err))
	}
	if !fi.Mode().IsRegular() {
		return nil, src.errf(key, "%s is not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, src.err(key, fileError(path, err))
	}
	return data, nil
}

// fileError phrases an os error about path without repeating the path.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, pe.Err)
	}
	return err
}

// checkSecretFile refuses private keys and password files that others can
// read, as ssh does, unless the operator has said otherwise.
func checkSecretFile(src *source, key, path string, allowInsecure bool) ([]byte, error) {
	data, err := checkReadable(src, key, path)
	if err != nil {
		return nil, err
	}
	// Windows has no group/other mode bits; its ACLs are the installer's
	// business.
	if allowInsecure || runtime.GOOS == "windows" {
		return data, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, src.err(key, fileError(path, err))
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		allow := "tls.allow_insecure_key_permissions"
		if table, _, ok := strings.Cut(key, "."); ok && table != "tls" {
			allow = table + ".allow_insecure_permissions"
		}
		return nil, src.err(key, &InsecureFileError{Path: path, Mode: mode, Allow: allow})
	}
	return data, nil
}

// The problems below name other settings in their fix or description.
// They are types, not only text, so that a command whose settings are
// flags rather than a file (forward) can say the same in terms of its
// flags.

// InsecureFileError is a secret file (a private key or a password file)
// that group or others can read. Allow is the key that accepts it as it
// is. It matches ErrInsecureKeyPermissions.
type InsecureFileError struct {
	Path  string
	Mode  fs.FileMode
	Allow string
}

func (e *InsecureFileError) Error() string {
	return fmt.Sprintf("secret file %s is readable by group/others (mode %04o); chmod 600 it or set %s = true", e.Path, uint32(e.Mode), e.Allow)
}

// Is reports whether target is ErrInsecureKeyPermissions.
func (e *InsecureFileError) Is(target error) bool { return target == ErrInsecureKeyPermissions }

// EncryptedKeyError is an encrypted private key with no password file:
// PasswordKey is the key that names one.
type EncryptedKeyError struct {
	Path        string
	PasswordKey string
}

func (e *EncryptedKeyError) Error() string {
	return fmt.Sprintf("%s is encrypted: set %s to a file holding its password", e.Path, e.PasswordKey)
}

// UnpairedError is one of two settings that go together set without the
// other: Given is the key set; the Error's Key is the one missing. It
// matches ErrRequired.
type UnpairedError struct {
	Given string
	// text says it in the file's terms.
	text string
}

func (e *UnpairedError) Error() string { return ErrRequired.Error() + ": " + e.text }

// Unwrap returns ErrRequired.
func (e *UnpairedError) Unwrap() error { return ErrRequired }

// ListenReusedError is a forward listening on the address an earlier
// forward, Forwards[Other], already listens on.
type ListenReusedError struct {
	Addr  string
	Other int
}

func (e *ListenReusedError) Error() string {
	return fmt.Sprintf("listen address %s is also used by forward[%d]", e.Addr, e.Other)
}

// checkCertificates checks a PEM certificate file and returns its
// certificates.
func checkCertificates(src *source, key, path string) ([]*x509.Certificate, error) {
	data, err := checkReadable(src, key, path)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertificatesPEM(data)
	if err != nil {
		return nil, src.errf(key, "%s: %v", path, err)
	}
	return certs, nil
}

// checkKeyPair checks the private key file: permissions, a PEM private key,
// and, when it is not encrypted, that it belongs to the certificate. (An
// encrypted key is decrypted when the credentials are loaded; doing it here
// too would cost a second KDF run, but it needs a password file.)
func checkKeyPair(src *source, keyKey, keyPath string, cert *x509.Certificate, passFile string, allowInsecure bool) error {
	return checkKeyPairFor(src, keyKey, keyPath, cert, passFile, "tls.key_password_file", allowInsecure)
}

// checkKeyPairFor is checkKeyPair for a key whose password file is set by
// passKey.
func checkKeyPairFor(src *source, keyKey, keyPath string, cert *x509.Certificate, passFile, passKey string, allowInsecure bool) error {
	data, err := checkSecretFile(src, keyKey, keyPath, allowInsecure)
	if err != nil {
		return err
	}
	// The key is the first private-key block, as pki.ParsePrivateKeyPEM
	// finds it: other blocks may come first, such as the EC PARAMETERS
	// that `openssl ecparam -genkey` writes.
	var block *pem.Block
	for rest := data; ; {
		if block, rest = pem.Decode(rest); block == nil || strings.HasSuffix(block.Type, "PRIVATE KEY") {
			break
		}
	}
	if block == nil {
		return src.errf(keyKey, "%s: no PEM private key found", keyPath)
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" {
		if passFile == "" {
			return src.err(keyKey, &EncryptedKeyError{Path: keyPath, PasswordKey: passKey})
		}
		return nil
	}
	key, err := pki.ParsePrivateKeyPEM(data, nil)
	if err != nil {
		return src.errf(keyKey, "%s: %v", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if ok && cert != nil && !pub.Equal(cert.PublicKey) {
		return src.errf(keyKey, "%s does not match the certificate's public key", keyPath)
	}
	return nil
}

// checkListen checks a listen address: host:port where host is empty, an
// IP address or a host name, and port is a number (0 picks a free port).
func checkListen(src *source, key, addr string) error {
	if addr == "" {
		return src.err(key, ErrRequired)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return src.errf(key, "invalid address %q: want host:port, e.g. \":8443\" or \"[::1]:8443\"", addr)
	}
	if _, err := parsePort(port, true); err != nil {
		return src.errf(key, "invalid address %q: %v", addr, err)
	}
	if host != "" && !validHost(host) {
		return src.errf(key, "invalid address %q: bad host %q", addr, host)
	}
	return nil
}

// checkDial checks an address to connect to: host:port with a port 1-65535.
func checkDial(src *source, key, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return src.errf(key, "invalid address %q: want host:port", addr)
	}
	if _, err := parsePort(port, false); err != nil {
		return src.errf(key, "invalid address %q: %v", addr, err)
	}
	if !validHost(host) {
		return src.errf(key, "invalid address %q: bad host %q", addr, host)
	}
	return nil
}

func parsePort(s string, zeroOK bool) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || (n == 0 && !zeroOK) {
		if zeroOK {
			return 0, fmt.Errorf("port %q is not a number 0-65535", s)
		}
		return 0, fmt.Errorf("port %q is not a number 1-65535", s)
	}
	return uint16(n), nil
}

// validHost accepts IP literals and LDH host names.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isBare(label[i]) {
				return false
			}
		}
	}
	return true
}

// checkDuration checks a duration against a floor, catching the classic
// mistake of writing `timeout = 10` (ten nanoseconds in TOML).
func checkDuration(src *source, key string, d, min, max time.Duration) error {
	switch {
	case d < min && d > 0 && d < time.Millisecond:
		return src.errf(key, "%v is too short: write durations with a unit, e.g. \"10s\"", d)
	case d < min:
		return src.errf(key, "%v is too short (minimum %v)", d, min)
	case max > 0 && d > max:
		return src.errf(key, "%v is too long (maximum %v)", d, max)
	}
	return nil
}
