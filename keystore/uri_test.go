package keystore

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=My%20Token;object=twoway;id=%01%02;type=private;manufacturer=SoftHSM%20project;x-vendor=1" +
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/twoway/pin")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "My Token" || u.Object != "twoway" || !bytes.Equal(u.ID, []byte{1, 2}) ||
		u.ModulePath != "/usr/lib/softhsm/libsofthsm2.so" || u.PINFile != "/etc/twoway/pin" || u.Serial != "" || u.SlotID != nil {
		t.Fatalf("parsed %+v", u)
	}
	for src, want := range map[string]string{
		"file:///etc/pin": "/etc/pin",
		"/etc/pin":        "/etc/pin",
		"file:/etc/pin":   "/etc/pin",
	} {
		u, err := ParseURI("pkcs11:serial=abc;id=%aa?module-path=/lib.so&pin-source=" + src)
		if err != nil || u.PINFile != want || u.Serial != "abc" {
			t.Errorf("pin-source=%s: %+v, %v", src, u, err)
		}
	}
	u, err = ParseURI("PKCS11:slot-id=3;object=k?pin-source=/p&module-path=/m.so")
	if err != nil || u.SlotID == nil || *u.SlotID != 3 {
		t.Fatalf("slot-id: %+v, %v", u, err)
	}
}

// TestParseURIErrors: each mistake gets an error that says what is wrong,
// and no error repeats a PIN.
func TestParseURIErrors(t *testing.T) {
	const ok = "?module-path=/m.so&pin-source=file:/p"
	for _, c := range []struct{ uri, want string }{
		{"file:/key.pem", `must start with "pkcs11:"`},
		{"pkcs11:object=k" + ok, "no token"},
		{"pkcs11:token=t" + ok, "no key"},
		{"pkcs11:token=t;object=k?pin-source=file:/p", "no PKCS#11 library"},
		{"pkcs11:token=t;object=k?module-path=lib.so&pin-source=/p", "must be an absolute path"},
		{"pkcs11:token=t;object=k?module-path=/m.so", "no PIN"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=pin.txt", "must be an absolute path"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=|/bin/getpin", "commands"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=file://host/p", "file:///path"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-value=s3cr3t-PIN", "pin-value is refused"},
		{"pkcs11:token=t;object=k;pin-value=s3cr3t-PIN" + ok, "belongs in the query"},
		{"pkcs11:token=t;object=k;colour=blue" + ok, `unknown path attribute "colour"`},
		{"pkcs11:token=t;object=k" + ok + "&module-name=softhsm2", "module-name is not supported"},
		{"pkcs11:token=t;object=k" + ok + "&speed=9", `unknown query attribute "speed"`},
		{"pkcs11:token=t;token=u;object=k" + ok, "token given twice"},
		{"pkcs11:token=t;object=%zz" + ok, "object: bad percent-encoding"},
		{"pkcs11:token=t;object=k;type=cert" + ok, "type=private"},
		{"pkcs11:token=t;object=k;slot-id=x" + ok, "slot-id"},
		{"pkcs11:token=t;s3cr3t-PIN-pasted;object=k" + ok, "is not name=value"},
	} {
		_, err := ParseURI(c.uri)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.uri, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t-PIN") {
			t.Errorf("%s: error repeats the PIN: %v", c.uri, err)
		}
	}
}

// TestCheck: Check finds the library and refuses a PIN file others can
// read, without loading anything.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib.so")
	pin := filepath.Join(dir, "pin")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pin, []byte("s3cr3t-PIN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ref := "pkcs11:token=t;object=k?module-path=" + lib + "&pin-source=file:" + pin
	if !IsReference(ref) || IsReference("/etc/twoway/client.key") || IsReference("client.key") {
		t.Fatal("IsReference")
	}
	if err := Check(ref); err != nil {
		t.Fatal(err)
	}
	if p, err := readPIN(pin); err != nil || p != "s3cr3t-PIN" {
		t.Fatalf("readPIN: %q, %v", p, err)
	}
	if err := os.Chmod(pin, 0o640); err != nil {
		t.Fatal(err)
	}
	err := Check(ref)
	if err == nil || !strings.Contains(err.Error(), "readable by group/others (mode 0640)") {
		t.Fatalf("group-readable PIN file: %v", err)
	}
	err = Check("pkcs11:token=t;object=k?module-path=" + filepath.Join(dir, "missing.so") + "&pin-source=file:" + pin)
	if err == nil || !strings.Contains(err.Error(), "module-path") {
		t.Fatalf("missing library: %v", err)
	}
	if err := os.Chmod(pin, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pin, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(ref); err == nil || !strings.Contains(err.Error(), "first line is empty") {
		t.Fatalf("empty PIN file: %v", err)
	}
}
