package tunnel

import (
	"net/netip"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

// Policy is what the gateway asks before admitting a peer, dialing for it
// or listening for it. *policy.Policy implements it; an implementation
// must be safe for concurrent use.
type Policy interface {
	// Admit says whether an identity may hold a session at all.
	Admit(id *pki.Identity) policy.Decision
	// Dial says whether the identity may reach a target. The tunnel asks
	// once per resolved address and dials only allowed ones.
	Dial(id *pki.Identity, t policy.Target) policy.Decision
	// Bind says whether the identity may have the gateway listen on
	// addr:port for it (-R).
	Bind(id *pki.Identity, addr netip.Addr, port uint16) policy.Decision
	// Grants summarises the identity's permissions for the hello.
	Grants(id *pki.Identity) []string
	// Honour returns the identity with only the groups its issuing CAs
	// may grant; the tunnel uses that identity for everything after.
	Honour(id *pki.Identity) *pki.Identity
}

var _ Policy = (*policy.Policy)(nil)
