//go:build !linux

package tpmkey

import (
	"errors"
	"testing"
)

func TestUnsupported(t *testing.T) {
	for _, f := range []func(string) (*Key, error){Open, Generate} {
		if _, err := f("tpm:?blob=/nonexistent/k.tpm"); !errors.Is(err, ErrUnsupported) {
			t.Errorf("got %v, want ErrUnsupported", err)
		}
	}
}
