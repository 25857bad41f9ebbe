package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/server/internal/pki"
)

// The running gateway re-issues its server certificate, with the same key,
// once it nears expiry; new TLS handshakes get the new one at once.
func TestServerCertRenewedWhileRunning(t *testing.T) {
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	g, err := newTestGateway(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
		Now: clk.Now, serverCertCheck: 10 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, g)
	served := func() *x509.Certificate {
		t.Helper()
		// The renewed certificate is valid from the fake clock's time, in
		// the future: read it without verifying.
		c, err := tls.Dial("tcp", r.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := served()

	clk.Advance(pki.DefaultServerValidity - pki.DefaultServerRenewBefore - time.Hour)
	time.Sleep(100 * time.Millisecond) // ten checks
	if again := served(); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("re-issued %v before the renewal window", pki.DefaultServerRenewBefore)
	}

	clk.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	var renewed *x509.Certificate
	for renewed = served(); renewed.SerialNumber.Cmp(first.SerialNumber) == 0; renewed = served() {
		if time.Now().After(deadline) {
			t.Fatal("the server certificate was not renewed within 10 s of entering its renewal window")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Equal(renewed.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo) {
		t.Error("the renewed server certificate has another key")
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed NotAfter %v, not after %v", renewed.NotAfter, first.NotAfter)
	}
}
