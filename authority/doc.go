// Package authority is twoway's offline certificate authority: it creates
// CA hierarchies (an offline root with separate server and client issuing
// CAs, and sub-CAs under them), issues and signs leaf certificates under a
// fixed policy, keeps each CA's record of what it issued (db.json), revokes
// and signs CRLs, makes keys and certificate requests, and exports PKCS#12
// files. It is what the `twoway pki` commands run; of the daemons only a
// gateway with [enroll] uses it, to certify laptops enrolling with a
// one-time token (package enroll).
//
// Every certificate it signs is first verified the way a peer would (with
// package pki), so that a certificate that could never be used is never
// handed out. Nothing is written unless everything a command makes can be.
//
// The name is not "ca" so as not to take the name callers give a *CA.
package authority
