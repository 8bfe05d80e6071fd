package tpmkey

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The key file format of tpm2-tss-engine, the tpm2 OpenSSL provider and
// ssh-tpm-agent ("ASN.1 Specification for TPM 2.0 Key Files",
// draft-bottomley-tpm2-keys), so that a key made by one can be used by
// another on the same TPM.
const pemType = "TSS2 PRIVATE KEY"

// oidLoadableKey is id-loadablekey: a key to be loaded with TPM2_Load under
// its parent.
var oidLoadableKey = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 3}

// tssKey is TPMKey of the specification. The fields twoway does not support
// (policies, imported secrets) are declared so that a file using them is
// refused with a clear error rather than misread.
type tssKey struct {
	Type        asn1.ObjectIdentifier
	EmptyAuth   asn1.RawValue `asn1:"optional,explicit,tag:0"` // BOOLEAN: see berBool
	Policy      asn1.RawValue `asn1:"optional,explicit,tag:1"`
	Secret      asn1.RawValue `asn1:"optional,explicit,tag:2"`
	AuthPolicy  asn1.RawValue `asn1:"optional,explicit,tag:3"`
	Description string        `asn1:"optional,explicit,tag:4,utf8"`
	RSAParent   asn1.RawValue `asn1:"optional,explicit,tag:5"` // BOOLEAN
	// Parent is TPM_RH_OWNER (0x40000001) for a key under the standard
	// SRK template (ECC P-256, or RSA-2048 when RSAParent), or a
	// persistent handle.
	Parent  int64
	Pubkey  []byte // TPM2B_PUBLIC
	Privkey []byte // TPM2B_PRIVATE
}

// keyFile is a decoded key file.
type keyFile struct {
	emptyAuth bool
	rsaParent bool
	parent    tpm2.TPMHandle
	public    tpm2.TPM2BPublic
	private   tpm2.TPM2BPrivate
}

func (f keyFile) marshal() ([]byte, error) {
	der, err := asn1.Marshal(tssKey{
		Type:      oidLoadableKey,
		EmptyAuth: derTrue(0, f.emptyAuth),
		RSAParent: derTrue(5, f.rsaParent),
		Parent:    int64(f.parent),
		Pubkey:    tpm2.Marshal(f.public),
		Privkey:   tpm2.Marshal(f.private),
	})
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

func parseKeyFile(data []byte) (keyFile, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return keyFile{}, fmt.Errorf("not a %q PEM file", pemType)
	}
	var k tssKey
	rest, err := asn1.Unmarshal(block.Bytes, &k)
	if err != nil {
		return keyFile{}, fmt.Errorf("%s: %w", pemType, err)
	}
	if len(rest) != 0 {
		return keyFile{}, fmt.Errorf("%s: trailing data", pemType)
	}
	switch {
	case !k.Type.Equal(oidLoadableKey):
		return keyFile{}, fmt.Errorf("%s: key type %v is not a loadable key (%v)", pemType, k.Type, oidLoadableKey)
	case len(k.Policy.FullBytes) != 0 || len(k.AuthPolicy.FullBytes) != 0:
		return keyFile{}, errors.New("keys with TPM policies are not supported")
	case len(k.Secret.FullBytes) != 0:
		return keyFile{}, errors.New("imported keys (with a secret) are not supported")
	case k.Parent != int64(tpm2.TPMRHOwner) && (k.Parent < minPersistent || k.Parent > maxPersistent):
		return keyFile{}, fmt.Errorf("parent %#x is neither the owner hierarchy nor a persistent handle", k.Parent)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.Pubkey)
	if err != nil {
		return keyFile{}, fmt.Errorf("public part: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.Privkey)
	if err != nil {
		return keyFile{}, fmt.Errorf("private part: %w", err)
	}
	emptyAuth, err := berBool(k.EmptyAuth)
	if err != nil {
		return keyFile{}, fmt.Errorf("emptyAuth: %w", err)
	}
	rsaParent, err := berBool(k.RSAParent)
	if err != nil {
		return keyFile{}, fmt.Errorf("rsaParent: %w", err)
	}
	return keyFile{
		emptyAuth: emptyAuth,
		rsaParent: rsaParent,
		parent:    tpm2.TPMHandle(k.Parent),
		public:    *pub,
		private:   *priv,
	}, nil
}

// derTrue is [tag] EXPLICIT BOOLEAN TRUE when b, else absent (FALSE is the
// default). RawValue's FullBytes are written as they are, wrapper included.
func derTrue(tag byte, b bool) asn1.RawValue {
	if !b {
		return asn1.RawValue{}
	}
	return asn1.RawValue{FullBytes: []byte{0xa0 | tag, 0x03, 0x01, 0x01, 0xff}}
}

// berBool reads an optional BOOLEAN leniently: the tpm2 OpenSSL provider
// writes TRUE as 0x01, which is BER but not DER, and encoding/asn1 accepts
// only DER's 0xff.
func berBool(v asn1.RawValue) (bool, error) {
	if len(v.FullBytes) == 0 {
		return false, nil
	}
	if v.Class == asn1.ClassContextSpecific {
		// The EXPLICIT wrapper: the BOOLEAN is inside.
		var inner asn1.RawValue
		if rest, err := asn1.Unmarshal(v.Bytes, &inner); err != nil || len(rest) != 0 {
			return false, errors.New("not a BOOLEAN")
		}
		v = inner
	}
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagBoolean || len(v.Bytes) != 1 {
		return false, errors.New("not a BOOLEAN")
	}
	return v.Bytes[0] != 0, nil
}
