//go:build !unix

package daemon

import "errors"

// dropTo is not supported here: Windows services run as the account the
// service manager gives them, and os.Geteuid is -1, so planDrop never
// plans a drop.
func dropTo(*privilegeDrop) error { return errors.New("not supported on this system") }
