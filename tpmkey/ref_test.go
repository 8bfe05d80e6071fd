package tpmkey

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want Ref
	}{
		{"tpm:/dev/tpmrm0?handle=0x81000010", Ref{Device: "/dev/tpmrm0", Handle: 0x81000010}},
		{"tpm:?handle=0x81000010", Ref{Device: DefaultDevice, Handle: 0x81000010}},
		{"tpm:/dev/tpm0?handle=2164260880", Ref{Device: "/dev/tpm0", Handle: 0x81000010}},
		{"tpm:/dev/tpmrm0?blob=/etc/twoway/client.tpm", Ref{Device: "/dev/tpmrm0", Blob: "/etc/twoway/client.tpm"}},
		{"tpm:/run/swtpm/sock?blob=/k/a+b%26c.tpm&pin-source=file:/etc/twoway/pin",
			Ref{Device: "/run/swtpm/sock", Blob: "/k/a+b&c.tpm", PINFile: "/etc/twoway/pin"}},
		{"tpm:?pin-source=file:///etc/pin&handle=0x81ffffff", Ref{Device: DefaultDevice, Handle: 0x81ffffff, PINFile: "/etc/pin"}},
		{"tpm:?handle=0x81000000&pin-source=/etc/pin", Ref{Device: DefaultDevice, Handle: 0x81000000, PINFile: "/etc/pin"}},
	}
	for _, c := range good {
		got, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
		// String is canonical: it parses back to the same Ref.
		again, err := Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v", c.in, got.String(), again, err)
		}
	}

	bad := []struct{ in, why string }{
		{"/etc/twoway/client.key", `does not start with "tpm:"`},
		{"pkcs11:token=a", `does not start with "tpm:"`},
		{"tpm:/dev/tpmrm0", "needs ?handle="},
		{"tpm:/dev/tpmrm0?", "needs ?handle="},
		{"tpm:dev/tpmrm0?handle=0x81000010", "device \"dev/tpmrm0\" is not an absolute path"},
		{"tpm:?handle=0x81000010&blob=/k", "not both"},
		{"tpm:?pin-source=file:/p", "needs handle= or blob="},
		{"tpm:?handle=0x40000001", "not a persistent handle"},
		{"tpm:?handle=0x80000000", "not a persistent handle"},
		{"tpm:?handle=0x1000000000", "not a number"},
		{"tpm:?handle=srk", "not a number"},
		{"tpm:?handle=0x81000010&handle=0x81000011", "handle given twice"},
		{"tpm:?blob=key.tpm", "not an absolute path"},
		{"tpm:?blob=", "not name=value"},
		{"tpm:?blob", "not name=value"},
		{"tpm:?blob=/k%zz", "blob:"},
		{"tpm:?blob=/k&object=x", `unknown attribute "object"`},
		{"tpm:?blob=/k&pin-source=env:PIN", "only file: sources"},
		{"tpm:?blob=/k&pin-source=file:pin", "not an absolute file path"},
		{"tpm:?blob=/k&pin-source=file://host/pin", "with a host"},
	}
	for _, c := range bad {
		_, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q): no error, want %q", c.in, c.why)
			continue
		}
		if !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("Parse(%q) = %v, want ErrBadRef naming the reference and saying %q", c.in, err, c.why)
		}
	}
}

func TestParseIn(t *testing.T) {
	got, err := ParseIn("tpm:?blob=keys/client.tpm&pin-source=file:client.pin", "/etc/twoway")
	want := Ref{Device: DefaultDevice, Blob: "/etc/twoway/keys/client.tpm", PINFile: "/etc/twoway/client.pin"}
	if err != nil || got != want {
		t.Errorf("ParseIn relative paths = %+v, %v; want %+v", got, err, want)
	}
	got, err = ParseIn("tpm:?blob=/k.tpm", "/etc/twoway")
	if err != nil || got.Blob != "/k.tpm" {
		t.Errorf("ParseIn absolute path = %+v, %v", got, err)
	}
	for _, c := range []struct{ ref, dir string }{
		{"tpm:?blob=k.tpm", ""},
		{"tpm:?blob=k.tpm", "etc"},
		{"tpm:dev/tpmrm0?blob=k.tpm", "/etc/twoway"},
	} {
		if _, err := ParseIn(c.ref, c.dir); !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), "not an absolute path") {
			t.Errorf("ParseIn(%q, %q) = %v, want: not an absolute path", c.ref, c.dir, err)
		}
	}
}

func TestKeyFile(t *testing.T) {
	pub := tpm2.New2B(keyTemplate(true))
	priv := tpm2.TPM2BPrivate{Buffer: []byte{1, 2, 3, 4}}
	for _, kf := range []keyFile{
		{emptyAuth: true, parent: tpm2.TPMRHOwner, public: pub, private: priv},
		{emptyAuth: false, parent: srkHandle, public: pub, private: priv},
	} {
		data, err := kf.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "-----BEGIN TSS2 PRIVATE KEY-----\n") {
			t.Fatalf("not a TSS2 PEM file:\n%s", data)
		}
		got, err := parseKeyFile(data)
		if err != nil {
			t.Fatal(err)
		}
		if got.emptyAuth != kf.emptyAuth || got.parent != kf.parent || string(got.private.Buffer) != "\x01\x02\x03\x04" ||
			string(tpm2.Marshal(got.public)) != string(tpm2.Marshal(kf.public)) {
			t.Errorf("round trip: got %+v, want %+v", got, kf)
		}
	}

	// A key file with a policy (tag [1]) is refused, not misread.
	kf := tssKey{Type: oidLoadableKey, Parent: int64(tpm2.TPMRHOwner), Pubkey: tpm2.Marshal(pub), Privkey: tpm2.Marshal(priv)}
	// RawValue.FullBytes is written verbatim: give the [1] wrapper too.
	kf.Policy.FullBytes = []byte{0xa1, 0x02, 0x30, 0x00} // [1] { SEQUENCE {} }
	der := mustASN1(t, kf)
	if _, err := parseKeyFile(pemBlock(der)); err == nil || !strings.Contains(err.Error(), "policies are not supported") {
		t.Errorf("key file with a policy: %v", err)
	}
	if _, err := parseKeyFile([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")); err == nil ||
		!strings.Contains(err.Error(), `not a "TSS2 PRIVATE KEY"`) {
		t.Errorf("EC key file: %v", err)
	}
}

func mustASN1(t *testing.T, v any) []byte {
	t.Helper()
	der, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemBlock(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
}
