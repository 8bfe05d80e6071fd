package config

import (
	"errors"
	"fmt"

	"github.com/BurntSushi/toml"
)

// Role says which daemon a configuration, a service, a control socket or a
// status is about. Its strings are what configuration files, --role flags,
// service names (twoway-server), control socket names (server.sock) and the
// control protocol's "role" field say, so they never change.
type Role string

// The two daemons.
const (
	// RoleServer is the gateway.
	RoleServer Role = "server"
	// RoleClient is the client daemon (client and forward commands).
	RoleClient Role = "client"
)

// ParseRole accepts "server" or "client".
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleServer, RoleClient:
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: want server or client", s)
}

// GuessRole guesses whether the file at path is a server or a client
// configuration: a gateway has a listen address or a [policy] table, a
// client a list of servers.
func GuessRole(path string) (Role, error) {
	var probe map[string]any
	if _, err := toml.DecodeFile(path, &probe); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return "", &Error{File: path, Line: pe.Position.Line, Err: fmt.Errorf("%w: %s", ErrSyntax, pe.Message)}
		}
		return "", &Error{File: path, Err: err}
	}
	_, listen := probe["listen"]
	_, pol := probe["policy"]
	_, servers := probe["servers"]
	switch {
	case (listen || pol) && !servers:
		return RoleServer, nil
	case servers && !listen && !pol:
		return RoleClient, nil
	}
	return "", &Error{File: path, Err: errors.New("cannot tell whether this is a server or a client configuration; use --role")}
}
