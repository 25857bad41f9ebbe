package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Peer certificates: what gateway replicas prove to each other on the peer
// link (server/internal/peer).
//
// A peer certificate is issued by the cluster CA to one replica, in memory,
// with a fresh P-256 key; it is never written anywhere. It carries:
//
//   - exactly one URI SAN urn:outpost:peer:<replica-id>, the replica id a
//     canonical UUID (cluster.LoadOrCreateID);
//   - PeerEKU as its only extended key usage — neither clientAuth nor
//     serverAuth — and the key usage DigitalSignature; it is not a CA;
//   - the subject CN "outpost peer <replica-id>".
//
// The two kinds never stand in for each other, by two independent checks
// each way. VerifyAgentChain demands the clientAuth extended key usage, which
// a peer certificate lacks, and AgentIDFromCert a urn:uuid URI SAN, which it
// lacks too. VerifyPeerChain demands PeerEKU, which an agent certificate
// (clientAuth only) lacks, and a urn:outpost:peer URI SAN, which it lacks
// too. The server certificate (serverAuth) passes neither.

// PeerEKU is the extended key usage that marks a peer certificate:
// 1.3.6.1.4.1.63164.17.1, an arc of Outpost's own. Only the cluster CA
// issues certificates the peer link trusts, so the OID needs no meaning
// outside it.
var PeerEKU = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 63164, 17, 1}

// peerURNPrefix starts the URI SAN that holds a replica id.
const peerURNPrefix = "urn:outpost:peer:"

// DefaultPeerValidity is the lifetime of a peer certificate: the holder
// re-issues it when a third of it is left (PeerIdentity).
const DefaultPeerValidity = 7 * 24 * time.Hour

// Errors about peer certificates, wrapped with the details.
var (
	// ErrPeerUntrusted: a certificate chain is not a peer certificate of
	// the CA valid now.
	ErrPeerUntrusted = errors.New("pki: peer certificate not trusted")
)

// IssuePeer issues a peer certificate for the replica replicaID (a
// canonical UUID) with a new key, valid from now-1min for validity (if
// zero, DefaultPeerValidity; capped at the CA's expiry). It returns the
// chain (leaf, CA) with Leaf set, ready for a tls.Config.
func (a *Authority) IssuePeer(replicaID string, validity time.Duration) (*tls.Certificate, error) {
	if _, ok := canonicalUUID(replicaID); !ok {
		return nil, fmt.Errorf("pki: issue peer: replica id %q is not a canonical UUID", replicaID)
	}
	if validity <= 0 {
		validity = DefaultPeerValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: issue peer: key: %w", err)
	}
	serial, err := newSerial(a.cfg.Rand)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "outpost peer " + replicaID},
		NotBefore:             now.Add(-backdate),
		NotAfter:              capAt(now.Add(validity), a.caCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{PeerEKU},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{{Scheme: "urn", Opaque: "outpost:peer:" + replicaID}},
	}
	der, err := x509.CreateCertificate(a.cfg.Rand, tmpl, a.caCert, &key.PublicKey, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: issue peer: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: issue peer: parse: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, a.caCert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// VerifyPeerChain verifies a peer certificate as presented in a TLS
// handshake (leaf first) against the CA at the current time and returns the
// replica id it names. Certificates after the leaf are ignored. The leaf
// must carry PeerEKU, no clientAuth or serverAuth usage, exactly one
// urn:outpost:peer:<canonical UUID> URI SAN, and not be a CA. Errors wrap
// ErrPeerUntrusted.
func (a *Authority) VerifyPeerChain(rawCerts [][]byte) (string, error) {
	if len(rawCerts) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrPeerUntrusted)
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPeerUntrusted, err)
	}
	peerEKU := slices.ContainsFunc(leaf.UnknownExtKeyUsage, PeerEKU.Equal)
	if leaf.IsCA || !peerEKU || len(leaf.ExtKeyUsage) > 0 {
		return "", fmt.Errorf("%w: not a peer certificate", ErrPeerUntrusted)
	}
	// Verify rejects unknown extended key usages unless told any will do;
	// the peer usage was checked above.
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:       a.caPool,
		CurrentTime: a.cfg.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPeerUntrusted, err)
	}
	return ReplicaIDFromPeerCert(leaf)
}

// ReplicaIDFromPeerCert returns the replica id of cert's single
// urn:outpost:peer: URI SAN, a canonical UUID. It checks nothing else.
// Errors wrap ErrPeerUntrusted.
func ReplicaIDFromPeerCert(cert *x509.Certificate) (string, error) {
	ids := uriSANs(cert, peerURNPrefix)
	if len(ids) != 1 {
		return "", fmt.Errorf("%w: %d urn:outpost:peer URI SANs, want one", ErrPeerUntrusted, len(ids))
	}
	if _, ok := canonicalUUID(ids[0]); !ok {
		return "", fmt.Errorf("%w: replica id %q is not a canonical UUID", ErrPeerUntrusted, ids[0])
	}
	return ids[0], nil
}
