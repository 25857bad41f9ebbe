// Package testtls makes throwaway TLS material for tests: ECDSA P-256 keys,
// a CA that issues server certificates and agent (client) certificates,
// CSRs, a self-signed certificate with a pool that trusts only it, and a TLS
// server to handshake with; and it reads back the PEM keys and certificates
// the code under test writes. Everything it issues is valid from an hour ago
// to an hour ahead unless a Spec says otherwise. It is imported by tests
// only, and uses only the standard library.
package testtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/netip"
	"net/url"
	"os"
	"testing"
	"time"
)

// Spec says what goes into a certificate besides its issuer; each zero
// field takes the default given with it.
type Spec struct {
	// CN is the subject's common name. If empty, none.
	CN string
	// NotBefore and NotAfter bound the validity. If zero, an hour ago and
	// an hour ahead.
	NotBefore, NotAfter time.Time
	// Hosts are a server certificate's SANs: IP literals become IP
	// addresses, anything else a DNS name. If empty, 127.0.0.1 and ::1.
	// Agent certificates and CAs ignore it.
	Hosts []string
	// AgentID makes an agent certificate carry the URI SAN
	// urn:uuid:<AgentID>. If empty, no URI SAN.
	AgentID string
	// Key is the public key to certify. If nil, a fresh P-256 key is made
	// and returned as the certificate's PrivateKey.
	Key crypto.PublicKey
}

// Key returns a fresh ECDSA P-256 key.
func Key(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// KeyPEM returns key as a PKCS#8 "PRIVATE KEY" PEM block.
func KeyPEM(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// CertPEM returns cert as a "CERTIFICATE" PEM block.
func CertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// ParseKey returns the private key of the first PEM block of b, which must
// be PKCS#8 (a gateway's ca.key, token.key; an agent's agent.key).
func ParseKey(tb testing.TB, b []byte) crypto.Signer {
	tb.Helper()
	key, err := x509.ParsePKCS8PrivateKey(firstBlock(tb, b, "PRIVATE KEY"))
	if err != nil {
		tb.Fatal(err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		tb.Fatalf("testtls: a %T cannot sign", key)
	}
	return signer
}

// ReadKey is ParseKey of the file at path.
func ReadKey(tb testing.TB, path string) crypto.Signer {
	tb.Helper()
	return ParseKey(tb, readFile(tb, path))
}

// ParseCert returns the certificate of the first PEM block of b.
func ParseCert(tb testing.TB, b []byte) *x509.Certificate {
	tb.Helper()
	cert, err := x509.ParseCertificate(firstBlock(tb, b, "CERTIFICATE"))
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// ReadCert is ParseCert of the file at path.
func ReadCert(tb testing.TB, path string) *x509.Certificate {
	tb.Helper()
	return ParseCert(tb, readFile(tb, path))
}

// firstBlock returns the bytes of the first PEM block of b, which must be
// of type typ.
func firstBlock(tb testing.TB, b []byte, typ string) []byte {
	tb.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != typ {
		tb.Fatalf("testtls: no %s PEM block", typ)
	}
	return block.Bytes
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// CSR returns a "CERTIFICATE REQUEST" PEM block for tmpl signed by key. A
// nil tmpl asks for the subject CN=agent and nothing else.
func CSR(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// CA is a certificate authority for tests. Its methods are safe for
// concurrent use.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA returns a self-signed CA (keyCertSign) with a fresh P-256 key, named
// and valid as s says; s.Key, s.Hosts and s.AgentID are ignored.
func NewCA(tb testing.TB, s Spec) *CA {
	tb.Helper()
	key := Key(tb)
	tmpl := template(s)
	tmpl.KeyUsage = x509.KeyUsageCertSign
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	return &CA{Cert: create(tb, tmpl, tmpl, &key.PublicKey, key), Key: key}
}

// PEM returns the CA certificate in PEM.
func (ca *CA) PEM() []byte { return CertPEM(ca.Cert) }

// Pool returns a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Server issues a server certificate (serverAuth) as s says. Its chain is
// the leaf alone; Leaf is set.
func (ca *CA) Server(tb testing.TB, s Spec) tls.Certificate {
	tb.Helper()
	return ca.issue(tb, serverTemplate(s), s.Key)
}

// Agent issues an agent certificate (clientAuth; the URI SAN
// urn:uuid:<s.AgentID> when set) as s says. Its chain is the leaf alone;
// Leaf is set.
func (ca *CA) Agent(tb testing.TB, s Spec) tls.Certificate {
	tb.Helper()
	tmpl := template(s)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if s.AgentID != "" {
		tmpl.URIs = []*url.URL{{Scheme: "urn", Opaque: "uuid:" + s.AgentID}}
	}
	return ca.issue(tb, tmpl, s.Key)
}

// issue signs tmpl for pub (nil: a fresh key, returned as PrivateKey).
func (ca *CA) issue(tb testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) tls.Certificate {
	tb.Helper()
	var priv crypto.PrivateKey
	if pub == nil {
		key := Key(tb)
		pub, priv = &key.PublicKey, key
	}
	leaf := create(tb, tmpl, ca.Cert, pub, ca.Key)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: priv, Leaf: leaf}
}

// serverTemplate is template(s) for serverAuth, with s.Hosts as SANs.
func serverTemplate(s Spec) *x509.Certificate {
	tmpl := template(s)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	hosts := s.Hosts
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1"}
	}
	for _, h := range hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// template is the part of every certificate that s decides, with
// digitalSignature usage. Its serial number is left nil, so that
// x509.CreateCertificate draws a random one.
func template(s Spec) *x509.Certificate {
	now := time.Now()
	if s.NotBefore.IsZero() {
		s.NotBefore = now.Add(-time.Hour)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = now.Add(time.Hour)
	}
	return &x509.Certificate{
		Subject:   pkix.Name{CommonName: s.CN},
		NotBefore: s.NotBefore,
		NotAfter:  s.NotAfter,
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
}

// create signs tmpl with parent and signer and returns it parsed.
func create(tb testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// SelfSigned returns a server certificate for 127.0.0.1 and ::1, valid from
// an hour ago to an hour ahead and named cn, and a pool holding only it.
func SelfSigned(tb testing.TB, cn string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key := Key(tb)
	tmpl := serverTemplate(Spec{CN: cn})
	leaf := create(tb, tmpl, tmpl, &key.PublicKey, key)
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool
}

// Chain returns a CA named cn+" CA" and a server certificate named cn for
// 127.0.0.1 and ::1 that it signed, both valid from an hour ago to an hour
// ahead. The server certificate's chain is leaf then CA, as the gateway
// serves it.
func Chain(tb testing.TB, cn string) (ca *x509.Certificate, server tls.Certificate) {
	tb.Helper()
	c := NewCA(tb, Spec{CN: cn + " CA"})
	server = c.Server(tb, Spec{CN: cn})
	server.Certificate = append(server.Certificate, c.Cert.Raw)
	return c.Cert, server
}

// Serve accepts TLS connections on 127.0.0.1 with cert until the test ends;
// on each it completes the handshake, writes one byte (after the session
// ticket, so a client reading it can resume later) and closes. It returns
// the listener's address; cleanup closes the listener and waits for the
// accept loop.
func Serve(tb testing.TB, cert tls.Certificate) string {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte{1})
			c.Close()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}
