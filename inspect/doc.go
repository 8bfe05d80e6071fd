// Package inspect describes PKI files for people: certificates, chains,
// certificate requests, CRLs, PKCS#12 files and private keys (their type
// and protection, never the key), detected by content in PEM or DER. A
// Report is what `twoway pki inspect --json` prints; WriteReport is its
// text form, and WriteIdentity the text form of what `twoway pki verify`
// accepted.
//
// It reads what it describes with package pki but decides nothing: whether
// a certificate is trusted is pki.Verifier's answer alone.
package inspect
