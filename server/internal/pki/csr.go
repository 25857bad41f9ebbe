package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// MaxCSRSize is the largest CSR, in bytes of PEM, that ParseCSR accepts.
const MaxCSRSize = 16 << 10

// pemCSR is the only PEM block type ParseCSR accepts.
const pemCSR = "CERTIFICATE REQUEST"

// Errors returned by ParseCSR and SignAgent, wrapped with the details.
var (
	// ErrCSRTooLarge: the PEM is longer than MaxCSRSize.
	ErrCSRTooLarge = errors.New("pki: csr too large")
	// ErrCSRInvalid: not a single PEM "CERTIFICATE REQUEST" block, not a
	// parseable CSR, or its signature does not verify.
	ErrCSRInvalid = errors.New("pki: invalid csr")
	// ErrCSRKeyType: the CSR's key is not ECDSA P-256.
	ErrCSRKeyType = errors.New("pki: csr key type not allowed (want ECDSA P-256)")
)

// ParseCSR parses a PEM certificate signing request from an agent and checks
// that it is at most MaxCSRSize bytes, holds exactly one "CERTIFICATE
// REQUEST" block (whitespace around it allowed, no PEM headers), carries an
// ECDSA P-256 key and is signed by that key. Errors wrap ErrCSRTooLarge,
// ErrCSRInvalid or ErrCSRKeyType. Only the public key of the result should
// be trusted; SignAgent ignores everything else in it.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	if len(pemBytes) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrCSRTooLarge, len(pemBytes), MaxCSRSize)
	}
	trimmed := bytes.TrimSpace(pemBytes)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, fmt.Errorf("%w: not PEM", ErrCSRInvalid)
	}
	block, rest := pem.Decode(trimmed)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: malformed PEM", ErrCSRInvalid)
	case block.Type != pemCSR:
		return nil, fmt.Errorf("%w: PEM block is %q, want %q", ErrCSRInvalid, block.Type, pemCSR)
	case len(block.Headers) != 0:
		return nil, fmt.Errorf("%w: unexpected PEM headers", ErrCSRInvalid)
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, fmt.Errorf("%w: unexpected data after the PEM block", ErrCSRInvalid)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSRInvalid, err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

// checkCSR checks the key type and the self-signature of a parsed CSR.
func checkCSR(csr *x509.CertificateRequest) error {
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return fmt.Errorf("%w: got %s", ErrCSRKeyType, keyKind(csr.PublicKey))
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: signature: %w", ErrCSRInvalid, err)
	}
	return nil
}

// keyKind names a public or private key type for error messages.
func keyKind(k any) string {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *ecdsa.PrivateKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *rsa.PrivateKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "Ed25519"
	case nil:
		return "no key"
	default:
		return fmt.Sprintf("%T", k)
	}
}
