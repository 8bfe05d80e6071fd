// Package pki is twoway's certificate tooling and verification: CA
// hierarchies (an offline root with separate server and client issuing CAs),
// issuing and signing, revocation with CRLs, the exact verification the
// tunnel performs on peers, and a credential store that reloads atomically
// while connections are live.
package pki
