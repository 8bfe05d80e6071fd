// Package pki is what a running gateway or client trusts about
// certificates: the exact verification the tunnel performs on peers (chain,
// issuing CA, validity, extended key usage, CRLs, name, pins), the identity
// a verified certificate carries, the checks that keep a CRL from being
// misread (delta, scoped, rolled back), loading certificates, CRLs and
// private keys (encrypted or not), and a credential store that reloads
// atomically while connections are live.
//
// Making certificates is not here: the offline CA tooling (CA hierarchies,
// issuing, signing, revocation, CRL signing, PKCS#12 export, key
// generation) is package authority, and describing PKI files to people is
// package inspect. Both build on this package; nothing here depends on
// them, so the daemons carry none of that code.
package pki
