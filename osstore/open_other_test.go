//go:build !darwin && !windows

package osstore

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenElsewhere(t *testing.T) {
	for ref, want := range map[string]string{
		"keychain:alice":               "keychain: references work on macOS only",
		"certstore:machine/my/alice":   "certstore: references work on Windows only",
		"certstore:sha1=" + sha1Hex:    "certstore: references work on Windows only",
		"keychain:sha256=" + sha256Hex: "keychain: references work on macOS only",
	} {
		if err := mustParse(t, ref).Available(); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Available() = %v", ref, err)
		}
		id, err := Open(ref)
		if err == nil {
			id.Close()
			t.Fatalf("Open(%q) succeeded", ref)
		}
		if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want ErrUnsupported saying %q", ref, err, want)
		}
	}
	if _, err := Open("keychain:sha1=12"); err == nil || !strings.Contains(err.Error(), "hex digits") {
		t.Errorf("a malformed reference: %v, want the Parse error first", err)
	}
	if _, err := Open("client.key"); !errors.Is(err, ErrNotRef) {
		t.Errorf("not a reference: %v", err)
	}
}
