package tpmkey_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log"
	"os"

	"github.com/twoway/twoway/tpmkey"
)

// A client certificate whose key is in the TPM, for crypto/tls. (Not run:
// it needs a TPM.)
func ExampleOpen() {
	key, err := tpmkey.Open("tpm:/dev/tpmrm0?blob=/home/alice/.config/twoway/client.tpm")
	if err != nil {
		log.Fatal(err) // names the reference; tpmkey.ErrUnavailable if the TPM is gone
	}
	defer key.Close()
	certPEM, err := os.ReadFile("/home/alice/.config/twoway/client.crt")
	if err != nil {
		log.Fatal(err)
	}
	var cert tls.Certificate
	for b, rest := pem.Decode(certPEM); b != nil; b, rest = pem.Decode(rest) {
		cert.Certificate = append(cert.Certificate, b.Bytes)
	}
	cert.PrivateKey = key // Sign runs TPM2_Sign
	_ = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
}

// A new key in the TPM and a certificate request made with it, as
// `twoway enroll --key tpm:...` does. (Not run: it needs a TPM.)
func ExampleGenerate() {
	key, err := tpmkey.Generate("tpm:?blob=/home/alice/.config/twoway/client.tpm")
	if err != nil {
		log.Fatal(err) // tpmkey.ErrExists if the file is there already
	}
	defer key.Close()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
	if err != nil {
		log.Fatal(err)
	}
	_ = csr
}
