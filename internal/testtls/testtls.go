// Package testtls makes throwaway TLS material for tests: a fresh
// self-signed ECDSA P-256 certificate for the loopback addresses and a pool
// that trusts only it, or a CA and a server certificate it signed. It is
// imported by tests only.
package testtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// SelfSigned returns a server certificate for 127.0.0.1 and ::1, valid from
// an hour ago to an hour ahead and named cn, and a pool holding only it.
func SelfSigned(tb testing.TB, cn string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	cert := issue(tb, serverTemplate(cn), nil)
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
	caTmpl := serverTemplate(cn + " CA")
	caTmpl.IPAddresses, caTmpl.ExtKeyUsage = nil, nil
	caTmpl.KeyUsage = x509.KeyUsageCertSign
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caCert := issue(tb, caTmpl, nil)
	tmpl := serverTemplate(cn)
	tmpl.SerialNumber = big.NewInt(2)
	server = issue(tb, tmpl, &caCert)
	server.Certificate = append(server.Certificate, caCert.Certificate[0])
	return caCert.Leaf, server
}

// serverTemplate is a server certificate for the loopback addresses, valid
// from an hour ago to an hour ahead.
func serverTemplate(cn string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// issue makes a fresh key and a certificate from tmpl signed by parent (nil:
// self-signed), with Leaf set.
func issue(tb testing.TB, tmpl *x509.Certificate, parent *tls.Certificate) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	issuer, signer := tmpl, any(key)
	if parent != nil {
		issuer, signer = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
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
