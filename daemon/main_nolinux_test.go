//go:build !linux

package daemon_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests. On Linux
// netns_linux_test.go's TestMain does this too, after its re-executed roles.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
