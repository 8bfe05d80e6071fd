package keystore

import (
	"errors"
	"fmt"
	"os"

	"github.com/twoway/twoway/tpmkey"
)

// tpmBackend serves "tpm:" references: an ECDSA P-256 key in a TPM 2.0
// (Linux), in a TSS2 key file or at a persistent handle (package tpmkey).
type tpmBackend struct{}

func (tpmBackend) Open(ref string) (Key, error) {
	r, err := tpmkey.Parse(ref)
	if err != nil {
		return nil, err
	}
	k, err := r.Open()
	if err != nil {
		return nil, tpmErr(err)
	}
	return &tpmKey{Key: k, r: r}, nil
}

func (tpmBackend) Generate(ref string) (Key, error) {
	r, err := tpmkey.Parse(ref)
	if err != nil {
		return nil, err
	}
	k, err := r.Generate()
	if err != nil {
		return nil, tpmErr(err)
	}
	return &tpmKey{Key: k, r: r}, nil
}

// Check parses ref (its paths absolute: config resolves them first).
func (tpmBackend) Check(ref string) error {
	_, err := tpmkey.Parse(ref)
	return err
}

// tpmErr adds this package's sentinels to tpmkey's, so that callers need
// to know only keystore's.
func tpmErr(err error) error {
	switch {
	case errors.Is(err, tpmkey.ErrUnavailable):
		return fmt.Errorf("%w (%w)", err, ErrUnavailable)
	case errors.Is(err, tpmkey.ErrExists):
		return fmt.Errorf("%w (%w)", err, ErrExists)
	}
	return err
}

type tpmKey struct {
	*tpmkey.Key
	r tpmkey.Ref
}

func (*tpmKey) inStore() {}

// Delete closes the key and removes its key file; a key at a persistent
// handle stays (evicting it takes the owner's authorization: use
// tpm2_evictcontrol).
func (k *tpmKey) Delete() error {
	_ = k.Close()
	if k.r.Blob == "" {
		return fmt.Errorf("%s: not removed: evict the persistent handle with tpm2_evictcontrol", k.r)
	}
	return os.Remove(k.r.Blob)
}

// ResolveIn returns ref with the relative paths of a tpm: reference made
// absolute against dir (a configuration file's directory); other
// references, and a tpm: one that does not parse (Check reports it), are
// returned as they are.
func ResolveIn(ref, dir string) string {
	if !tpmkey.IsRef(ref) {
		return ref
	}
	r, err := tpmkey.ParseIn(ref, dir)
	if err != nil {
		return ref
	}
	return r.String()
}
