// Package pki is the gateway's certificate authority (DESIGN.md §4).
//
// An Authority lives in the gateway data directory as five PEM files:
//
//	ca.pem      the CA certificate (ECDSA P-256, 10 years, keyCertSign+cRLSign, path length 0), mode 0644
//	ca.key      the CA private key, mode 0600
//	server.pem  the TLS server certificate (serverAuth, SANs = configured host names), mode 0644
//	server.key  the server private key, mode 0600; it never changes, so agents' SPKI pins survive re-issues
//	token.key   the ECDSA P-256 key that signs enrollment and session tokens (ES256), mode 0600
//
// Private keys are PKCS#8 ("PRIVATE KEY" PEM blocks); certificates are
// "CERTIFICATE" blocks. Every file is written atomically. The CA is created
// only in a directory holding none of these files: a missing, corrupt or
// mismatched file is an error naming it, never a reason to start a new CA.
//
// Gateway replicas sharing one store share an Authority's Secrets (the CA,
// the server key and the token key) instead of files: New builds an
// Authority from them that keeps its server certificate, issued for its own
// names with the shared key, in memory.
//
// The Authority signs agent certificates from CSRs (taking only the public
// key), verifies agent chains for the QUIC listener, and re-issues the server
// certificate with the same key when it nears expiry or the host names change.
package pki

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane/transport"
)

// Names of the files an Authority keeps in its directory.
const (
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
	TokenKeyFile   = "token.key"
)

// File modes: private keys are readable by the owner only; certificates are
// public.
const (
	keyFileMode  = 0o600
	certFileMode = 0o644
)

// Defaults for Config.
const (
	DefaultServerValidity    = 365 * 24 * time.Hour
	DefaultServerRenewBefore = 30 * 24 * time.Hour
	DefaultAgentValidity     = 30 * 24 * time.Hour
)

// caValidityYears is the lifetime of a new CA.
const caValidityYears = 10

// backdate is subtracted from "now" for every NotBefore, so a peer whose
// clock is slightly behind still accepts a fresh certificate.
const backdate = time.Minute

// serialBits is the size of the random serial number of every certificate.
const serialBits = 128

// Config configures LoadOrCreate. The zero value is usable: no extra host
// names, default validities, the system clock and crypto/rand.
type Config struct {
	// Hostnames are the DNS names and IP literals (IPv6 with or without
	// brackets) the server certificate is valid for. localhost, 127.0.0.1 and
	// ::1 are always added. The first entry is the certificate's common name
	// (localhost if empty). DNS names are lowercased; a leading "*." wildcard
	// is allowed.
	Hostnames []string
	// ServerValidity is the lifetime of a new server certificate. If zero,
	// 365 days. It is capped at the CA's expiry.
	ServerValidity time.Duration
	// ServerRenewBefore is how long before expiry the server certificate is
	// re-issued. If zero, 30 days. It must be shorter than ServerValidity.
	ServerRenewBefore time.Duration
	// AgentValidity is the lifetime of an agent certificate. If zero, 30
	// days. It is capped at the CA's expiry.
	AgentValidity time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers and signature randomness. If nil,
	// crypto/rand.Reader. Since Go 1.26 key generation always uses the
	// system's secure source, whatever Rand is.
	Rand io.Reader
	// Logger receives what was created, loaded and re-issued. If nil, logs
	// are discarded.
	Logger hclog.Logger
	// ReplicaID, if set, is the id of this gateway among the replicas of a
	// cluster (a lowercase hyphenated UUID): the server certificate then
	// also carries the URI SAN naming it (replica.go). If empty (a gateway
	// that is a cluster of one), it carries none.
	ReplicaID string
}

func (c Config) withDefaults() Config {
	c.ServerValidity = cmp.Or(c.ServerValidity, DefaultServerValidity)
	c.ServerRenewBefore = cmp.Or(c.ServerRenewBefore, DefaultServerRenewBefore)
	c.AgentValidity = cmp.Or(c.AgentValidity, DefaultAgentValidity)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.ServerValidity < 0:
		return fmt.Errorf("pki: server validity %v is negative", c.ServerValidity)
	case c.ServerRenewBefore < 0:
		return fmt.Errorf("pki: server renew-before %v is negative", c.ServerRenewBefore)
	case c.AgentValidity < 0:
		return fmt.Errorf("pki: agent validity %v is negative", c.AgentValidity)
	case c.ServerRenewBefore >= c.ServerValidity:
		return fmt.Errorf("pki: server renew-before %v must be shorter than the server validity %v",
			c.ServerRenewBefore, c.ServerValidity)
	}
	if _, err := replicaURIs(c.ReplicaID); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// Authority is the gateway CA with its server certificate and token key.
// Create it with LoadOrCreate. All methods are safe for concurrent use; the
// certificates and keys it returns are shared and must not be modified.
type Authority struct {
	dir   string
	cfg   Config
	log   hclog.Logger
	names hostNames // the configured server certificate names

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	caPool *x509.CertPool
	caSPKI string

	serverKey  *ecdsa.PrivateKey
	serverSPKI string
	tokenKey   *ecdsa.PrivateKey

	// renewMu serializes re-issues of the server certificate, so two
	// concurrent renewals do not both write server.pem.
	renewMu sync.Mutex
	// server is the current server certificate chain (leaf, CA) with Leaf
	// set; swapped atomically on re-issue and read by GetCertificate.
	server atomic.Pointer[tls.Certificate]
}

// CACert returns the CA certificate.
func (a *Authority) CACert() *x509.Certificate { return a.caCert }

// CACertPEM returns the CA certificate in PEM form (a fresh copy).
func (a *Authority) CACertPEM() []byte { return append([]byte(nil), a.caPEM...) }

// CAPool returns a new pool holding only the CA certificate; the caller may
// modify it.
func (a *Authority) CAPool() *x509.CertPool { return a.caPool.Clone() }

// CASPKISHA256 returns the lowercase hex SHA-256 of the CA's
// SubjectPublicKeyInfo: the pin carried in enrollment tokens.
func (a *Authority) CASPKISHA256() string { return a.caSPKI }

// ServerSPKISHA256 returns the lowercase hex SHA-256 of the server key's
// SubjectPublicKeyInfo: the pin agents keep. It never changes, since
// re-issues keep the key.
func (a *Authority) ServerSPKISHA256() string { return a.serverSPKI }

// TokenKey returns the ES256 token signing key.
func (a *Authority) TokenKey() *ecdsa.PrivateKey { return a.tokenKey }

// CAKey is the CA's private key. Only tests reach it (through
// server/servertest), to forge certificates the gateway would trust.
func (a *Authority) CAKey() *ecdsa.PrivateKey { return a.caKey }

// ServerCert returns the current server certificate.
func (a *Authority) ServerCert() *x509.Certificate { return a.server.Load().Leaf }

// GetCertificate returns the current server certificate chain (leaf then
// CA, so a client that pins only the CA key can verify it); use it as
// tls.Config.GetCertificate. It never fails.
func (a *Authority) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.server.Load(), nil
}

// keySPKI returns the SPKI pin of an ECDSA public key (transport.SPKIHashHex).
func keySPKI(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return transport.SPKIHashHex(der), nil
}

// newSerial returns a random positive serial number of serialBits bits.
func newSerial(r io.Reader) (*big.Int, error) {
	var b [serialBits / 8]byte
	for range 3 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if s := new(big.Int).SetBytes(b[:]); s.Sign() > 0 {
			return s, nil
		}
	}
	return nil, errors.New("pki: serial number: the random source returned only zeros")
}

// serialHex formats a serial number as 32 lowercase hex digits.
func serialHex(s *big.Int) string { return fmt.Sprintf("%032x", s) }

// capAt returns t, or limit if t is after it.
func capAt(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}
