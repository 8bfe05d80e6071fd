package authority_test

import (
	"os"
	"testing"

	"github.com/twoway/twoway/authority"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(redeemHelperEnv); spec != "" {
		os.Exit(redeemHelper(spec))
	}
	// Key encryption strength is not under test; its format is.
	authority.KDFIterations = 1000
	os.Exit(m.Run())
}
