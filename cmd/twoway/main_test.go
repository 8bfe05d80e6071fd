package main

import (
	"os"
	"testing"

	"github.com/twoway/twoway/authority"
)

// reexecEnv makes the test binary behave as the twoway binary, so process
// tests drive the real main without a separate build.
const reexecEnv = "TWOWAY_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(reexecEnv) == "1" {
		main()
		os.Exit(0)
	}
	// Key encryption strength is not under test here; keep CLI tests fast
	// under the race detector.
	authority.KDFIterations = 1000
	os.Exit(m.Run())
}
