// Command twoway is a mutual-TLS tunnel: a gateway daemon, a client daemon,
// a port-forward mode and a PKI tool in one binary.
//
// The commands here parse flags and print results; what runs lives in
// packages: `server`, `client` and `forward` are one call into package
// daemon (RunServer, RunClient), `service` drives package service.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "twoway:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "twoway:", err)
		os.Exit(1)
	}
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }
