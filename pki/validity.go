package pki

import "time"

// A certificate's validity at a given time, as `twoway pki inspect` and
// `twoway pki list` report it (the "status" of their JSON).
const (
	StatusValid       = "valid"
	StatusExpired     = "expired"
	StatusNotYetValid = "not yet valid"
)

// DaysLeft is the whole days from now until t, rounded down, so that a
// certificate that expired an hour ago shows -1, never 0.
func DaysLeft(t, now time.Time) int {
	d := t.Sub(now)
	days := int(d / (24 * time.Hour))
	if d < 0 && d%(24*time.Hour) != 0 {
		days--
	}
	return days
}
