package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/pki/pkitest"
)

// TestEnrollKeyFlags: --key and --existing-key mistakes are reported
// before the gateway is contacted (none listens here).
func TestEnrollKeyFlags(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	ca := pkitest.WriteFile(t, dir, "ca.crt", pkitest.PEM(h.ServerBundle()...))
	lib, pin := filepath.Join(dir, "lib.so"), filepath.Join(dir, "pin")
	os.WriteFile(lib, nil, 0o644)
	os.WriteFile(pin, []byte("s3cr3t-PIN\n"), 0o600)
	ref := "pkcs11:token=t;object=k?module-path=" + lib + "&pin-source=file:" + pin
	base := enrollOptions{server: "127.0.0.1:1", ca: ca, token: "t", outDir: dir, keyType: "ecdsa-p256", timeout: 1e9}
	for _, c := range []struct {
		set  func(*enrollOptions)
		want string
	}{
		{func(o *enrollOptions) { o.key = "client.key" }, "--key: want a key reference"},
		{func(o *enrollOptions) { o.existingKey = true }, "--existing-key needs --key"},
		{func(o *enrollOptions) { o.key, o.keyType = ref, "rsa-3072" }, "--key-type rsa-3072 is for keys in files"},
		{func(o *enrollOptions) { o.key = "pkcs11:token=t?module-path=" + lib + "&pin-source=file:" + pin }, "--key: pkcs11 URI: no key"},
		{func(o *enrollOptions) { o.key = "pkcs11:token=t;object=k?module-path=" + lib + "&pin-value=s3cr3t-PIN" }, "pin-value is refused"},
	} {
		o := base
		c.set(&o)
		_, err := runEnroll(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cr3t-PIN") {
			t.Errorf("%+v: %v, want %q", o, err, c.want)
		}
	}
}
