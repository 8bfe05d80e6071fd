package tpmkey

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// supported: this is Linux.
const supported = true

// openDevice opens a TPM character device (/dev/tpmrm0, /dev/tpm0) or the
// unix socket of a software TPM (swtpm socket --server type=unixio), which
// speaks the same raw command protocol, one connection per command.
func openDevice(path string) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Mode()&fs.ModeCharDevice != 0:
		return linuxtpm.Open(path)
	case fi.Mode()&fs.ModeSocket != 0:
		return linuxudstpm.Open(path)
	default:
		return nil, fmt.Errorf("%s is neither a TPM character device nor a swtpm unix socket", path)
	}
}
