package main

import (
	"os"
	"testing"

	"github.com/twoway/twoway/pki"
)

func TestMain(m *testing.M) {
	// Key encryption strength is not under test here; keep CLI tests fast
	// under the race detector.
	pki.KDFIterations = 1000
	os.Exit(m.Run())
}
