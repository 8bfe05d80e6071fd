package control

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Query sends req to the daemon at path and returns its response. A
// response with OK false is returned as a *RemoteError. errors.Is(err,
// ErrNotRunning) tells that no daemon answers at path. Without a deadline
// on ctx, Query gives up after 10 s.
func Query(ctx context.Context, path string, req Request) (Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	c, err := dial(ctx, path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Closing the connection unblocks a read or write when ctx ends early.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control %s: send: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Response{}, fmt.Errorf("control %s: read response: %w", path, err)
	}
	if !resp.OK {
		return resp, &RemoteError{Op: req.Op, Msg: resp.Error}
	}
	return resp, nil
}

// Find returns the first of paths at which something exists, for commands
// that look in several places; "" if none does.
func Find(paths []string) string {
	for _, p := range paths {
		if exists(p) {
			return p
		}
	}
	return ""
}
