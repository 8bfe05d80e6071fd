package main

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/keystore"
)

// enrollKey is the key `twoway enroll` requests its certificate for:
// made here in a file (keyPEM is what to write to client.key), or, with
// --key, inside a token, where it stays (keyPEM is nil and ref is what
// client.toml names instead of client.key).
type enrollKey struct {
	signer crypto.Signer
	keyPEM []byte
	ref    string
	// discard undoes the key when the enrollment failed: a key made in
	// a token is deleted, so that trying again with the same --key
	// works; an existing one is only closed.
	discard func() error
}

// checkEnrollKey checks --key before the gateway is contacted.
func checkEnrollKey(o enrollOptions) error {
	if o.key == "" {
		if o.existingKey {
			return fmt.Errorf("--existing-key needs --key")
		}
		return nil
	}
	if !keystore.IsReference(o.key) {
		return fmt.Errorf("--key: want a key reference such as pkcs11:token=...;object=...?module-path=...&pin-source=file:... (without --key the key is made in %s)", enrollKeyFile)
	}
	if !o.existingKey && o.keyType != "" && o.keyType != string(authority.KeyECDSAP256) {
		return fmt.Errorf("--key makes an %s key in the token; --key-type %s is for keys in files", authority.KeyECDSAP256, o.keyType)
	}
	if err := keystore.Check(o.key); err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	return nil
}

// newEnrollKey makes the key o asks for.
func newEnrollKey(o enrollOptions) (*enrollKey, error) {
	if o.key != "" && o.existingKey {
		k, err := keystore.Open(o.key)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		return &enrollKey{signer: k, ref: o.key, discard: k.Close}, nil
	}
	if o.key != "" {
		k, err := keystore.Generate(o.key)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		return &enrollKey{signer: k, ref: o.key, discard: k.Delete}, nil
	}
	key, err := authority.GenerateKey(authority.KeyType(o.keyType))
	if err != nil {
		return nil, fmt.Errorf("--key-type: %w", err)
	}
	pem, err := authority.MarshalPrivateKeyPEM(key, nil)
	if err != nil {
		return nil, err
	}
	return &enrollKey{signer: key, keyPEM: pem, ref: enrollKeyFile, discard: func() error { return nil }}, nil
}

// tokenCSR is `twoway pki csr --key REF`: the key is made in the token
// and only the request is written. A request that cannot be written
// takes the key out of the token again.
func tokenCSR(cmd *cobra.Command, req authority.CSRRequest, ref string, kf leafKeyFlags) error {
	switch {
	case kf.encrypt || kf.keyPasswordFile != "":
		return errors.New("--encrypt and --key-password-file are for key files; a key in a token is protected by the token's PIN")
	case kf.keyType != string(authority.KeyECDSAP256):
		return fmt.Errorf("--key makes an %s key in the token; --key-type %s is for key files", authority.KeyECDSAP256, kf.keyType)
	case !keystore.IsReference(ref):
		return errors.New("--key: want a key reference such as pkcs11:token=...;object=...?module-path=...&pin-source=file:...")
	}
	if err := keystore.Check(ref); err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	req.Signer = &placeholderSigner{} // so Validate plans without NAME.key
	if err := req.Validate(); err != nil {
		return err
	}
	k, err := keystore.Generate(ref)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	req.Signer = k
	res, err := authority.CreateCSR(req)
	if err != nil {
		if derr := k.Delete(); derr != nil {
			err = errors.Join(err, fmt.Errorf("and removing the key made for it: %w", derr))
		}
		return err
	}
	k.Close()
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Made the key in the token: %s\nWrote %s\n", ref, res.CSRFile)
	fmt.Fprintf(w, "The CA signs it with: twoway pki sign --ca CA --csr %s server|client\n", filepath.Base(res.CSRFile))
	fmt.Fprintf(w, "Then set, next to the certificate: key = %q\n", ref)
	return nil
}

// placeholderSigner stands for a key that is not made yet, so that a
// CSRRequest can be validated before the token is touched. It never
// signs.
type placeholderSigner struct{}

func (*placeholderSigner) Public() crypto.PublicKey { return nil }

func (*placeholderSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("placeholder key")
}
