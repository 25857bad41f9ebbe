package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/dataplane/transport"
)

// Errors about agent certificates, wrapped with the details.
var (
	// ErrAgentID: a certificate carries no urn:uuid: URI SAN, more than one,
	// or a malformed one.
	ErrAgentID = errors.New("pki: no valid agent id in certificate")
	// ErrUntrusted: an agent certificate chain does not verify against the CA
	// for client authentication at the current time.
	ErrUntrusted = errors.New("pki: agent certificate not trusted")
)

// uuidURNPrefix starts the URI SAN that holds an agent id.
const uuidURNPrefix = "urn:uuid:"

// IssuedCert is an agent certificate signed by SignAgent.
type IssuedCert struct {
	DER        []byte    // the certificate, DER
	PEM        []byte    // the certificate, one PEM "CERTIFICATE" block
	Serial     string    // serial number, 32 lowercase hex digits
	NotAfter   time.Time // expiry
	SPKISHA256 string    // lowercase hex SHA-256 of the SubjectPublicKeyInfo
}

// SignAgent issues an agent certificate for the public key of csr (DESIGN.md
// §4). Nothing else in the CSR is used: the subject CN is name, the URI SAN
// is urn:uuid:<agentID> (lowercase, hyphenated), a DNS SAN is hostname when
// it is a valid DNS name (lowercased; otherwise it is left out), the only
// extended key usage is clientAuth, the key usage DigitalSignature, and the
// validity runs from now-1min to now+AgentValidity (capped at the CA's
// expiry), with a random 128-bit serial.
//
// csr should come from ParseCSR; its key type and signature are checked again
// (errors wrap ErrCSRKeyType or ErrCSRInvalid). name must not be empty and
// agentID must not be the nil UUID.
func (a *Authority) SignAgent(csr *x509.CertificateRequest, agentID uuid.UUID, name, hostname string) (*IssuedCert, error) {
	if csr == nil {
		return nil, fmt.Errorf("%w: no csr", ErrCSRInvalid)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	if agentID == uuid.Nil {
		return nil, errors.New("pki: sign agent: the agent id is the nil UUID")
	}
	if name == "" {
		return nil, errors.New("pki: sign agent: empty agent name")
	}
	serial, err := newSerial(a.cfg.Rand)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              capAt(now.Add(a.cfg.AgentValidity), a.caCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{{Scheme: "urn", Opaque: "uuid:" + agentID.String()}},
	}
	if h := strings.TrimSuffix(strings.ToLower(hostname), "."); h != "" {
		if validDNSName(h, false) {
			tmpl.DNSNames = []string{h}
		} else {
			a.log.Debug("agent host name is not a valid DNS name; left out of the certificate",
				"agent_id", agentID, "hostname", hostname)
		}
	}
	der, err := x509.CreateCertificate(a.cfg.Rand, tmpl, a.caCert, csr.PublicKey, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: sign agent: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: sign agent: parse: %w", err)
	}
	return &IssuedCert{
		DER:        der,
		PEM:        certPEM(der),
		Serial:     serialHex(serial),
		NotAfter:   cert.NotAfter,
		SPKISHA256: transport.SPKISHA256(cert),
	}, nil
}

// AgentIDFromCert returns the agent id held in cert's single urn:uuid: URI
// SAN, which must be in canonical form (lowercase, hyphenated). Other URI
// SANs are ignored. Errors wrap ErrAgentID.
func AgentIDFromCert(cert *x509.Certificate) (uuid.UUID, error) {
	ids := uriSANs(cert, uuidURNPrefix)
	switch {
	case len(ids) == 0:
		return uuid.Nil, fmt.Errorf("%w: no urn:uuid URI SAN", ErrAgentID)
	case len(ids) > 1:
		return uuid.Nil, fmt.Errorf("%w: %d urn:uuid URI SANs, want one", ErrAgentID, len(ids))
	}
	id, ok := canonicalUUID(ids[0])
	if !ok {
		return uuid.Nil, fmt.Errorf("%w: %q is not a canonical, non-nil urn:uuid", ErrAgentID, uuidURNPrefix+ids[0])
	}
	return id, nil
}

// uriSANs returns what follows prefix (matched case-insensitively) in each
// of cert's URI SANs that starts with it.
func uriSANs(cert *x509.Certificate, prefix string) []string {
	var out []string
	for _, u := range cert.URIs {
		s := u.String()
		if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
			out = append(out, s[len(prefix):])
		}
	}
	return out
}

// canonicalUUID parses s, a UUID in canonical form (lowercase, hyphenated)
// other than the nil UUID.
func canonicalUUID(s string) (uuid.UUID, bool) {
	id, err := uuid.Parse(s)
	return id, err == nil && id.String() == s && id != uuid.Nil
}

// VerifyAgentChain verifies an agent's certificate, as presented in a TLS
// handshake (leaf first), against the CA for client authentication at the
// current time, and returns the leaf. Certificates after the leaf are
// ignored: the CA's path length of 0 allows no intermediates. The leaf must
// carry the clientAuth extended key usage and not be a CA. It does not
// check the agent id or the store; see AgentIDFromCert. Errors wrap
// ErrUntrusted.
func (a *Authority) VerifyAgentChain(rawCerts [][]byte) (*x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return nil, fmt.Errorf("%w: no certificate presented", ErrUntrusted)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	// Verify treats a certificate without extended key usages as valid for
	// any, and accepts a root presented as the leaf: demand a real agent
	// certificate.
	if leaf.IsCA || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("%w: not an agent (client) certificate", ErrUntrusted)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:       a.caPool,
		CurrentTime: a.cfg.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return leaf, nil
}
