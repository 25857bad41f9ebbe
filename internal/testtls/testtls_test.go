package testtls

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// verify checks that cert chains to roots for usage (and name, if set) now.
func verify(t *testing.T, cert *x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, name string) {
	t.Helper()
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("%q does not verify: %v", cert.Subject.CommonName, err)
	}
}

func TestSelfSigned(t *testing.T) {
	cert, pool := SelfSigned(t, "self")
	verify(t, cert.Leaf, pool, x509.ExtKeyUsageServerAuth, "127.0.0.1")
	verify(t, cert.Leaf, pool, x509.ExtKeyUsageServerAuth, "::1")
	if cert.Leaf.Subject.CommonName != "self" || cert.PrivateKey == nil || len(cert.Certificate) != 1 {
		t.Fatalf("CN %q, key %T, chain of %d", cert.Leaf.Subject.CommonName, cert.PrivateKey, len(cert.Certificate))
	}
}

func TestChain(t *testing.T) {
	ca, server := Chain(t, "gw")
	if !ca.IsCA || ca.Subject.CommonName != "gw CA" {
		t.Fatalf("CA %q, IsCA %v", ca.Subject.CommonName, ca.IsCA)
	}
	if len(server.Certificate) != 2 || !slices.Equal(server.Certificate[1], ca.Raw) {
		t.Fatal("the chain is not leaf then CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	verify(t, server.Leaf, pool, x509.ExtKeyUsageServerAuth, "127.0.0.1")
}

func TestCAIssues(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca := NewCA(t, Spec{CN: "test CA", NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(1000 * time.Hour)})
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 || !ca.Cert.NotAfter.Equal(now.Add(1000*time.Hour)) {
		t.Fatalf("CA: IsCA %v, usage %v, NotAfter %v", ca.Cert.IsCA, ca.Cert.KeyUsage, ca.Cert.NotAfter)
	}

	server := ca.Server(t, Spec{CN: "gw", Hosts: []string{"gw.example", "192.0.2.7"}})
	verify(t, server.Leaf, ca.Pool(), x509.ExtKeyUsageServerAuth, "gw.example")
	verify(t, server.Leaf, ca.Pool(), x509.ExtKeyUsageServerAuth, "192.0.2.7")
	if _, err := server.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err == nil {
		t.Fatal("explicit hosts still include loopback")
	}
	if _, err := tls.X509KeyPair(CertPEM(server.Leaf), KeyPEM(t, server.PrivateKey.(*ecdsa.PrivateKey))); err != nil {
		t.Fatalf("CertPEM and KeyPEM do not make a key pair: %v", err)
	}

	key := Key(t)
	nb, na := now.Add(-time.Hour), now.Add(29*time.Hour)
	agent := ca.Agent(t, Spec{CN: "office", AgentID: "6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8", Key: &key.PublicKey, NotBefore: nb, NotAfter: na})
	verify(t, agent.Leaf, ca.Pool(), x509.ExtKeyUsageClientAuth, "")
	switch l := agent.Leaf; {
	case agent.PrivateKey != nil:
		t.Error("a private key for a given public key")
	case !key.PublicKey.Equal(l.PublicKey):
		t.Error("not the given key")
	case len(l.URIs) != 1 || l.URIs[0].String() != "urn:uuid:6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8":
		t.Errorf("URIs %v", l.URIs)
	case l.Subject.CommonName != "office" || !l.NotBefore.Equal(nb) || !l.NotAfter.Equal(na):
		t.Errorf("CN %q, valid %v to %v", l.Subject.CommonName, l.NotBefore, l.NotAfter)
	}
	other := ca.Agent(t, Spec{})
	if other.PrivateKey == nil || len(other.Leaf.URIs) != 0 || other.Leaf.SerialNumber.Cmp(agent.Leaf.SerialNumber) == 0 {
		t.Errorf("default agent certificate: key %T, URIs %v, serial %v", other.PrivateKey, other.Leaf.URIs, other.Leaf.SerialNumber)
	}
	if time.Until(other.Leaf.NotAfter) > time.Hour || time.Since(other.Leaf.NotBefore) < 59*time.Minute {
		t.Errorf("default validity %v to %v", other.Leaf.NotBefore, other.Leaf.NotAfter)
	}
}

func TestParseAndRead(t *testing.T) {
	ca := NewCA(t, Spec{CN: "saved"})
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certPath, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, KeyPEM(t, ca.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded := &CA{Cert: ReadCert(t, certPath), Key: ReadKey(t, keyPath)}
	if !loaded.Cert.Equal(ca.Cert) || !ParseCert(t, ca.PEM()).Equal(ca.Cert) {
		t.Fatal("another certificate")
	}
	if !ca.Cert.PublicKey.(*ecdsa.PublicKey).Equal(loaded.Key.Public()) {
		t.Fatal("another key")
	}
	verify(t, loaded.Agent(t, Spec{AgentID: "x"}).Leaf, ca.Pool(), x509.ExtKeyUsageClientAuth, "")
}

func TestCSR(t *testing.T) {
	key := Key(t)
	for _, tc := range []struct {
		tmpl *x509.CertificateRequest
		cn   string
	}{
		{nil, "agent"},
		{&x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, "x"},
		{&x509.CertificateRequest{}, ""},
	} {
		block, rest := pem.Decode(CSR(t, key, tc.tmpl))
		if block == nil || block.Type != "CERTIFICATE REQUEST" || len(rest) != 0 {
			t.Fatal("not one CSR PEM block")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil || csr.Subject.CommonName != tc.cn || !key.PublicKey.Equal(csr.PublicKey) {
			t.Fatalf("CSR: signature %v, CN %q (want %q)", err, csr.Subject.CommonName, tc.cn)
		}
	}
}

func TestServe(t *testing.T) {
	ca, server := Chain(t, "gw")
	addr := Serve(t, server)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 1 {
		t.Fatalf("read %v, %v; want one byte then EOF", b, err)
	}
}
