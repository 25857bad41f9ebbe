package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/internal/testtls"
)

func TestParseCSRSizeLimit(t *testing.T) {
	base := testtls.CSR(t, testtls.Key(t), nil)
	pad := func(n int) []byte {
		b := bytes.Clone(base)
		return append(b, bytes.Repeat([]byte("\n"), n-len(b))...)
	}
	if _, err := ParseCSR(pad(MaxCSRSize)); err != nil {
		t.Errorf("CSR of exactly %d bytes refused: %v", MaxCSRSize, err)
	}
	_, err := ParseCSR(pad(MaxCSRSize + 1))
	if !errors.Is(err, ErrCSRTooLarge) {
		t.Errorf("CSR of %d bytes: %v, want ErrCSRTooLarge", MaxCSRSize+1, err)
	}
	if MaxCSRSize != 16384 {
		t.Errorf("MaxCSRSize = %d, want 16384", MaxCSRSize)
	}
}

func TestParseCSRKeyTypes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if csr, err := ParseCSR(testtls.CSR(t, testtls.Key(t), nil)); err != nil || csr == nil {
		t.Fatalf("P-256 CSR refused: %v", err)
	}
	for name, p := range map[string][]byte{
		"RSA 2048":    testtls.CSR(t, rsaKey, nil),
		"ECDSA P-384": testtls.CSR(t, p384, nil),
		"ECDSA P-521": testtls.CSR(t, p521, nil),
		"Ed25519":     testtls.CSR(t, edKey, nil),
	} {
		_, err := ParseCSR(p)
		if !errors.Is(err, ErrCSRKeyType) {
			t.Errorf("%s: %v, want ErrCSRKeyType", name, err)
		} else if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %q does not name the key type", name, err)
		}
	}
}

func TestParseCSRInvalid(t *testing.T) {
	good := testtls.CSR(t, testtls.Key(t), nil)
	block, _ := pem.Decode(good)

	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 0x01 // last byte of the signature
	tamperedSubject := bytes.Clone(block.Bytes)
	if i := bytes.Index(tamperedSubject, []byte("agent")); i < 0 {
		t.Fatal("subject not found in CSR")
	} else {
		tamperedSubject[i] = 'A'
	}
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	withHeader := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes})

	tests := map[string][]byte{
		"empty":                   nil,
		"not PEM":                 []byte("hello"),
		"DER, not PEM":            block.Bytes,
		"leading text":            append([]byte("junk\n"), good...),
		"trailing text":           append(bytes.Clone(good), "junk"...),
		"two CSRs":                append(bytes.Clone(good), good...),
		"wrong block type":        enc("CERTIFICATE", block.Bytes),
		"NEW CERTIFICATE REQUEST": enc("NEW CERTIFICATE REQUEST", block.Bytes),
		"PEM headers":             withHeader,
		"truncated DER":           enc("CERTIFICATE REQUEST", block.Bytes[:len(block.Bytes)-10]),
		"garbage DER":             enc("CERTIFICATE REQUEST", []byte{0x30, 0x01, 0x00}),
		"tampered signature":      enc("CERTIFICATE REQUEST", tampered),
		"tampered subject":        enc("CERTIFICATE REQUEST", tamperedSubject),
		"unterminated PEM":        good[:len(good)-20],
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseCSR(p)
			if !errors.Is(err, ErrCSRInvalid) {
				t.Fatalf("got %v, want ErrCSRInvalid", err)
			}
		})
	}
	// Surrounding whitespace is fine.
	if _, err := ParseCSR(append(append([]byte("\n\t "), good...), "\r\n"...)); err != nil {
		t.Errorf("whitespace around the PEM refused: %v", err)
	}
}

func TestSignAgent(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk, "gw.example.com"))
	key := testtls.Key(t)
	otherID := uuid.New()
	// Everything in this CSR but the key must be ignored.
	csr := mustParseCSR(t, testtls.CSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "evil", Organization: []string{"Evil Corp"}},
		DNSNames:       []string{"gw.example.com", "evil.example"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"evil@example.com"},
		URIs:           []*url.URL{{Scheme: "urn", Opaque: "uuid:" + otherID.String()}},
	}))
	id := uuid.MustParse("0A1B2C3D-4E5F-4a6b-8c7d-8e9fa0b1c2d3")

	issued, err := a.SignAgent(csr, id, "Agent One", "Host-1.Corp.Example.")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		t.Fatal(err)
	}
	if block, rest := pem.Decode(issued.PEM); block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, issued.DER) || len(rest) != 0 {
		t.Error("PEM does not hold exactly the DER certificate")
	}

	if cert.Subject.CommonName != "Agent One" || len(cert.Subject.Organization) != 0 {
		t.Errorf("subject %v, want CN=Agent One only", cert.Subject)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:uuid:0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3" {
		t.Errorf("URI SANs %v", cert.URIs)
	}
	if !slices.Equal(cert.DNSNames, []string{"host-1.corp.example"}) {
		t.Errorf("DNS SANs %q", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 0 || len(cert.EmailAddresses) != 0 {
		t.Errorf("CSR SANs copied: %v %v", cert.IPAddresses, cert.EmailAddresses)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("EKU %v", cert.ExtKeyUsage)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v", cert.KeyUsage)
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("agent certificate must be a non-CA leaf")
	}
	if !cert.NotBefore.Equal(clk.Now().Add(-time.Minute)) || !cert.NotAfter.Equal(clk.Now().Add(30*day)) {
		t.Errorf("validity %v – %v, want now-1m – now+30d", cert.NotBefore, cert.NotAfter)
	}
	if !issued.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("IssuedCert.NotAfter %v", issued.NotAfter)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate key is not the CSR's key")
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	if issued.SPKISHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("SPKISHA256 %s", issued.SPKISHA256)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(issued.Serial) || issued.Serial != hex.EncodeToString(cert.SerialNumber.FillBytes(make([]byte, 16))) {
		t.Errorf("serial %q vs certificate %x", issued.Serial, cert.SerialNumber)
	}
	if err := cert.CheckSignatureFrom(a.CACert()); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	if got, err := AgentIDFromCert(cert); err != nil || got != id {
		t.Errorf("AgentIDFromCert = %v, %v", got, err)
	}

	again, err := a.SignAgent(csr, id, "Agent One", "")
	if err != nil {
		t.Fatal(err)
	}
	if again.Serial == issued.Serial {
		t.Error("two certificates with the same serial")
	}
	if c2, _ := x509.ParseCertificate(again.DER); len(c2.DNSNames) != 0 {
		t.Errorf("empty host name gave DNS SANs %q", c2.DNSNames)
	}
	bad, err := a.SignAgent(csr, id, "Agent One", "not a host!")
	if err != nil {
		t.Fatal(err)
	}
	if c3, _ := x509.ParseCertificate(bad.DER); len(c3.DNSNames) != 0 {
		t.Errorf("invalid host name gave DNS SANs %q", c3.DNSNames)
	}
}

func TestSignAgentRefuses(t *testing.T) {
	a := mustLoad(t, t.TempDir(), testConfig(t, newClock()))
	good := mustParseCSR(t, testtls.CSR(t, testtls.Key(t), nil))
	if _, err := a.SignAgent(good, uuid.Nil, "a", ""); err == nil {
		t.Error("nil UUID accepted")
	}
	if _, err := a.SignAgent(good, uuid.New(), "", ""); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := a.SignAgent(nil, uuid.New(), "a", ""); !errors.Is(err, ErrCSRInvalid) {
		t.Errorf("nil CSR: %v", err)
	}
	// A CSR that did not go through ParseCSR is still checked.
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	raw, _ := x509.ParseCertificateRequest(der)
	if _, err := a.SignAgent(raw, uuid.New(), "a", ""); !errors.Is(err, ErrCSRKeyType) {
		t.Errorf("P-384 CSR: %v, want ErrCSRKeyType", err)
	}
	der, _ = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, testtls.Key(t))
	der[len(der)-1] ^= 1
	raw, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SignAgent(raw, uuid.New(), "a", ""); !errors.Is(err, ErrCSRInvalid) {
		t.Errorf("tampered CSR: %v, want ErrCSRInvalid", err)
	}
}

func TestSignAgentValidity(t *testing.T) {
	clk := newClock()
	cfg := testConfig(t, clk)
	cfg.AgentValidity = 2 * time.Hour
	a := mustLoad(t, t.TempDir(), cfg)
	csr := mustParseCSR(t, testtls.CSR(t, testtls.Key(t), nil))
	issued, err := a.SignAgent(csr, uuid.New(), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if !issued.NotAfter.Equal(clk.Now().Add(2 * time.Hour)) {
		t.Errorf("NotAfter %v, want now+2h", issued.NotAfter)
	}
	// Capped at the CA's expiry.
	clk.Advance(a.CACert().NotAfter.Sub(clk.Now()) - time.Hour)
	issued, err = a.SignAgent(csr, uuid.New(), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if !issued.NotAfter.Equal(a.CACert().NotAfter) {
		t.Errorf("NotAfter %v, want the CA's %v", issued.NotAfter, a.CACert().NotAfter)
	}
}

func TestAgentIDFromCert(t *testing.T) {
	id := uuid.New()
	u := func(s string) *url.URL {
		t.Helper()
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := u("urn:uuid:" + id.String())
	tests := []struct {
		name string
		uris []*url.URL
		ok   bool
	}{
		{"one", []*url.URL{good}, true},
		{"with other URIs", []*url.URL{u("https://example.com/x"), good, u("spiffe://td/agent")}, true},
		{"uppercase scheme", []*url.URL{u("URN:uuid:" + id.String())}, true},
		{"none", nil, false},
		{"only other URIs", []*url.URL{u("https://example.com")}, false},
		{"two", []*url.URL{good, u("urn:uuid:" + uuid.NewString())}, false},
		{"same twice", []*url.URL{good, good}, false},
		{"uppercase id", []*url.URL{u("urn:uuid:" + strings.ToUpper(id.String()))}, false},
		{"no hyphens", []*url.URL{u("urn:uuid:" + strings.ReplaceAll(id.String(), "-", ""))}, false},
		{"braces", []*url.URL{u("urn:uuid:{" + id.String() + "}")}, false},
		{"not a uuid", []*url.URL{u("urn:uuid:hello")}, false},
		{"nil uuid", []*url.URL{u("urn:uuid:" + uuid.Nil.String())}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AgentIDFromCert(&x509.Certificate{URIs: tt.uris})
			if tt.ok {
				if err != nil || got != id {
					t.Fatalf("got %v, %v; want %v", got, err, id)
				}
				return
			}
			if !errors.Is(err, ErrAgentID) {
				t.Fatalf("got %v, %v; want ErrAgentID", got, err)
			}
		})
	}
}

func TestVerifyAgentChain(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk))
	other := mustLoad(t, t.TempDir(), testConfig(t, clk))
	csr := mustParseCSR(t, testtls.CSR(t, testtls.Key(t), nil))
	id := uuid.New()

	ours, err := a.SignAgent(csr, id, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := a.VerifyAgentChain([][]byte{ours.DER})
	if err != nil {
		t.Fatalf("our agent certificate refused: %v", err)
	}
	if !bytes.Equal(leaf.Raw, ours.DER) {
		t.Error("returned leaf is not the presented certificate")
	}
	if _, err := a.VerifyAgentChain([][]byte{ours.DER, a.CACert().Raw}); err != nil {
		t.Errorf("leaf + CA refused: %v", err)
	}

	theirs, err := other.SignAgent(csr, id, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	// A self-signed "CA" with the same name as ours must not help either.
	refuse := map[string][][]byte{
		"another CA":             {theirs.DER},
		"another CA with its CA": {theirs.DER, other.CACert().Raw},
		"server certificate":     {a.ServerCert().Raw},
		"the CA itself":          {a.CACert().Raw},
		"nothing":                nil,
		"garbage":                {[]byte("garbage")},
	}
	for name, chain := range refuse {
		if _, err := a.VerifyAgentChain(chain); !errors.Is(err, ErrUntrusted) {
			t.Errorf("%s: %v, want ErrUntrusted", name, err)
		}
	}

	// Expiry follows the injected clock.
	clk.Advance(30*day + time.Second)
	if _, err := a.VerifyAgentChain([][]byte{ours.DER}); !errors.Is(err, ErrUntrusted) {
		t.Errorf("expired certificate: %v, want ErrUntrusted", err)
	}
}
