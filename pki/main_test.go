package pki_test

import (
	"os"
	"testing"

	"github.com/twoway/twoway/pki"
)

func TestMain(m *testing.M) {
	// Key encryption strength is not under test; its format is.
	pki.KDFIterations = 1000
	os.Exit(m.Run())
}
