package authority_test

import (
	"os"
	"testing"

	"github.com/twoway/twoway/authority"
)

func TestMain(m *testing.M) {
	// Key encryption strength is not under test; its format is.
	authority.KDFIterations = 1000
	os.Exit(m.Run())
}
