//go:build !cgo

package keystore

import (
	"errors"
	"testing"
)

// TestNoCgo: without cgo a valid reference is refused with ErrNoCgo, and a
// bad one still gets its own error.
func TestNoCgo(t *testing.T) {
	if _, err := Open("pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:/p"); !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Open: %v, want ErrNoCgo", err)
	}
	if _, err := Generate("pkcs11:token=t"); err == nil || errors.Is(err, ErrNoCgo) {
		t.Fatalf("Generate of a bad reference: %v, want its parse error", err)
	}
}
