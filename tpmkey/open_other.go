//go:build !linux

package tpmkey

import "github.com/google/go-tpm/tpm2/transport"

// supported is false: Open and Generate fail with ErrUnsupported before
// looking at any file.
const supported = false

// openDevice fails: only Linux's TPM devices are supported (Windows' TBS and
// macOS, which has no TPM, are not).
func openDevice(string) (transport.TPMCloser, error) { return nil, ErrUnsupported }
