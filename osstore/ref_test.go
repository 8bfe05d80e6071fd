package osstore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const (
	sha1Hex   = "0123456789abcdef0123456789abcdef01234567"
	sha256Hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
)

func TestParse(t *testing.T) {
	h1, _ := hex.DecodeString(sha1Hex)
	h256, _ := hex.DecodeString(sha256Hex)
	for _, tc := range []struct {
		in   string
		want Ref
		str  string // canonical String(); "" means in
	}{
		{in: "keychain:alice", want: Ref{Kind: Keychain, Name: "alice"}},
		{in: "keychain:Alice Smith (laptop)", want: Ref{Kind: Keychain, Name: "Alice Smith (laptop)"}},
		{in: "KeyChain:alice", want: Ref{Kind: Keychain, Name: "alice"}, str: "keychain:alice"},
		{in: "keychain:sha1=" + sha1Hex, want: Ref{Kind: Keychain, SHA1: h1}},
		{in: "keychain:SHA1=" + strings.ToUpper(sha1Hex), want: Ref{Kind: Keychain, SHA1: h1}, str: "keychain:sha1=" + sha1Hex},
		{in: "keychain:sha256=" + sha256Hex, want: Ref{Kind: Keychain, SHA256: h256}},
		{in: "keychain:sha1=01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67", want: Ref{Kind: Keychain, SHA1: h1}, str: "keychain:sha1=" + sha1Hex},
		{in: "keychain:sha1=01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67", want: Ref{Kind: Keychain, SHA1: h1}, str: "keychain:sha1=" + sha1Hex},
		{in: "certstore:alice", want: Ref{Kind: CertStore, Store: "MY", Name: "alice"}},
		{in: "certstore:sha1=" + sha1Hex, want: Ref{Kind: CertStore, Store: "MY", SHA1: h1}},
		{in: "certstore:user/my/alice", want: Ref{Kind: CertStore, Location: CurrentUser, Store: "MY", Name: "alice"}},
		{in: "certstore:CurrentUser/My/alice", want: Ref{Kind: CertStore, Location: CurrentUser, Store: "MY", Name: "alice"}, str: "certstore:user/my/alice"},
		{in: "certstore:machine/my/sha1=" + sha1Hex, want: Ref{Kind: CertStore, Location: LocalMachine, Store: "MY", SHA1: h1}},
		{in: "certstore:LocalMachine/Twoway_1/sha256=" + sha256Hex, want: Ref{Kind: CertStore, Location: LocalMachine, Store: "TWOWAY_1", SHA256: h256}, str: "certstore:machine/twoway_1/sha256=" + sha256Hex},
		// Not a location: the whole rest is the name.
		{in: "certstore:eng/alice", want: Ref{Kind: CertStore, Store: "MY", Name: "eng/alice"}},
		{in: "keychain:user/my/alice", want: Ref{Kind: Keychain, Name: "user/my/alice"}},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.Kind != tc.want.Kind || got.Location != tc.want.Location || got.Store != tc.want.Store ||
			got.Name != tc.want.Name || !bytes.Equal(got.SHA1, tc.want.SHA1) || !bytes.Equal(got.SHA256, tc.want.SHA256) {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if got.String() != str {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got.String(), str)
		}
		if again, err := Parse(got.String()); err != nil || again.String() != got.String() {
			t.Errorf("Parse(%q) does not round-trip: %v %v", got.String(), again, err)
		}
		if !IsRef(tc.in) {
			t.Errorf("IsRef(%q) = false", tc.in)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"keychain:", "no name or thumbprint"},
		{"certstore:", "no name or thumbprint"},
		{"certstore:user/my/", "no name or thumbprint"},
		{"certstore:user/alice", "want certstore:user/STORE/NAME"},
		{"certstore:machine//alice", "store name \"\""},
		{"certstore:machine/m y/alice", "store name \"m y\""},
		{"keychain:sha1=", "0 hex digits, want 40"},
		{"keychain:sha1=0123", "4 hex digits, want 40"},
		{"keychain:sha1=" + sha256Hex, "64 hex digits, want 40"},
		{"keychain:sha256=" + sha1Hex, "40 hex digits, want 64"},
		{"keychain:sha1=" + strings.Repeat("zz", 20), "not hexadecimal"},
		{"certstore:machine/my/sha1=abc", "3 hex digits"},
		{"keychain: alice", "leading or trailing spaces"},
		{"keychain:alice ", "leading or trailing spaces"},
		{"keychain:a\x00b", "NUL"},
	} {
		_, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "key reference") {
			t.Errorf("Parse(%q) = %v, want an error about %q", tc.in, err, tc.want)
		}
		if errors.Is(err, ErrNotRef) || !IsRef(tc.in) {
			t.Errorf("Parse(%q): a malformed reference must not look like a non-reference", tc.in)
		}
	}
	for _, in := range []string{"client.key", "/etc/twoway/keychain:alice", "pkcs11:token=a;object=b", "keychain", ""} {
		if _, err := Parse(in); !errors.Is(err, ErrNotRef) {
			t.Errorf("Parse(%q) = %v, want ErrNotRef", in, err)
		}
		if IsRef(in) {
			t.Errorf("IsRef(%q) = true", in)
		}
	}
}
