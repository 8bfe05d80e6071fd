package tunnel

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests. Nothing
// is ignored: every goroutine the package or yamux starts ends with Stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
