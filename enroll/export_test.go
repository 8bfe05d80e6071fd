package enroll

import "time"

// SetTimeout shortens the gateway's bound on an exchange for tests.
func (h *Handler) SetTimeout(d time.Duration) { h.timeout = d }
