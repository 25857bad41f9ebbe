package peer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ALPN is the application protocol of the peer link.
const ALPN = "gw-peer/1"

// Authority is what the peer link needs from the cluster CA;
// *pki.Authority is one.
type Authority interface {
	// IssuePeer issues a peer certificate for the replica (validity 0:
	// the default).
	IssuePeer(replicaID string, validity time.Duration) (*tls.Certificate, error)
	// VerifyPeerChain verifies a peer certificate chain and returns the
	// replica id it names.
	VerifyPeerChain(rawCerts [][]byte) (string, error)
}

// Identity is this replica's peer certificate. It is issued by NewIdentity
// and re-issued, with a new key, by the first handshake that finds a third
// of its life or less left. Safe for concurrent use.
type Identity struct {
	ca        Authority
	replicaID string
	now       func() time.Time

	mu sync.Mutex
	// Guarded by mu: the current certificate.
	cert *tls.Certificate
}

// NewIdentity issues the replica's first peer certificate. now is the
// clock of renewals (nil: time.Now).
func NewIdentity(ca Authority, replicaID string, now func() time.Time) (*Identity, error) {
	if ca == nil || replicaID == "" {
		return nil, errors.New("peer: identity needs the authority and the replica id")
	}
	if now == nil {
		now = time.Now
	}
	id := &Identity{ca: ca, replicaID: replicaID, now: now}
	if _, err := id.certificate(); err != nil {
		return nil, err
	}
	return id, nil
}

// ReplicaID is the replica the identity names.
func (id *Identity) ReplicaID() string { return id.replicaID }

// certificate returns the current certificate, re-issued first if a third
// of its validity or less is left. A failed re-issue keeps the old one
// while it is valid.
func (id *Identity) certificate() (*tls.Certificate, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	now := id.now()
	if c := id.cert; c != nil {
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		if c.Leaf.NotAfter.Sub(now) > life/3 {
			return c, nil
		}
	}
	c, err := id.ca.IssuePeer(id.replicaID, 0)
	if err != nil {
		if id.cert != nil && now.Before(id.cert.Leaf.NotAfter) {
			return id.cert, nil
		}
		return nil, fmt.Errorf("peer: issue the peer certificate: %w", err)
	}
	id.cert = c
	return c, nil
}

// ServerTLS returns the TLS configuration of the peer link's accepting
// side (tunnel.Config.PeerTLS): TLS 1.3, ALPN, this replica's peer
// certificate, and a client certificate that must be a peer's.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		MaxVersion:     tls.VersionTLS13,
		NextProtos:     []string{ALPN},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.certificate() },
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := id.ca.VerifyPeerChain(raw)
			return err
		},
	}
}

// clientTLS returns the TLS configuration for dialing the replica
// replicaID: its certificate must be a peer certificate naming it.
func (id *Identity) clientTLS(replicaID string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ServerName: "outpost-peer",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.certificate()
		},
		// The chain is checked by VerifyPeerCertificate, against the
		// cluster CA and for the replica meant.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			got, err := id.ca.VerifyPeerChain(raw)
			if err != nil {
				return err
			}
			if got != replicaID {
				return fmt.Errorf("peer: reached replica %s, wanted %s", got, replicaID)
			}
			return nil
		},
	}
}
