package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"math"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/testtls"
)

func TestRenewTime(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(30 * 24 * time.Hour)}
	if got, want := renewTime(c, DefaultRenewFraction), nb.Add(20*24*time.Hour); !got.Equal(want) {
		t.Errorf("1/3: %v, want %v", got, want)
	}
	if got, want := renewTime(c, 0.5), nb.Add(15*24*time.Hour); !got.Equal(want) {
		t.Errorf("1/2: %v, want %v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, f := range []float64{-0.1, 1, 1.5, math.NaN()} {
		if _, err := New(Config{ConfigDir: t.TempDir(), RenewFraction: f}); err == nil {
			t.Errorf("RenewFraction %v accepted", f)
		}
	}
	if _, err := New(Config{ConfigDir: t.TempDir(), RenewBackoffMin: time.Hour, RenewBackoffMax: time.Minute}); err == nil {
		t.Error("RenewBackoffMax < RenewBackoffMin accepted")
	}
	for _, k := range []int{-1, MaxHAConnections + 1} {
		if _, err := New(Config{ConfigDir: t.TempDir(), HAConnections: k}); err == nil {
			t.Errorf("HAConnections %d accepted", k)
		}
	}
	if _, err := New(Config{ConfigDir: t.TempDir(), RenewFraction: 0.5}); err != nil {
		t.Error(err)
	}
}

func TestRenewBackoff(t *testing.T) {
	a, err := New(Config{ConfigDir: t.TempDir(), RenewBackoffMin: time.Minute, RenewBackoffMax: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for streak, max := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 4: 8 * time.Minute, 5: 10 * time.Minute, 100: 10 * time.Minute} {
		for range 50 {
			if d := a.renewBackoff(streak); d < max/2 || d > max {
				t.Fatalf("streak %d: %v, want within [%v, %v]", streak, d, max/2, max)
			}
		}
	}
}

// csrOf parses the request's CSR and checks its signature.
func csrOf(t *testing.T, req *dataplane.CertRenewalRequest) *x509.CertificateRequest {
	t.Helper()
	block, _ := pem.Decode([]byte(req.CSRPEM))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("CSR is not PEM: %q", req.CSRPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	return csr
}

// success answers a renewal with a certificate for pub issued by the test
// CA, valid for the test lifetime from notBefore.
func (e *env) success(t *testing.T, pub *ecdsa.PublicKey, notBefore time.Time) (*dataplane.CertRenewalResponse, *x509.Certificate) {
	t.Helper()
	cert, certPEM := e.p.issue(t, pub, testAgentID, notBefore, notBefore.Add(testLifetime))
	return &dataplane.CertRenewalResponse{
		Version: dataplane.ProtocolVersion, Result: dataplane.ResultSuccess,
		ClientCertPEM: string(certPEM), CACertPEM: string(e.p.caPEM),
	}, cert
}

func refusal(reason string) *dataplane.CertRenewalResponse {
	return &dataplane.CertRenewalResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultError, Reason: reason}
}

func send(t *testing.T, c *gwConn, m dataplane.ControlMessage) {
	t.Helper()
	if err := c.w.Send(m); err != nil {
		t.Fatal(err)
	}
}

// The agent renews at the threshold and not before, with a CSR of its own
// key, writes the new certificate, closes with "cert-renewed" and reconnects
// at once with the new certificate.
func TestRenewalAtThreshold(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(e.renewAt().Add(-time.Second))
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)

	// One second before the threshold: many checks, no request.
	c.quiet(t, 300*time.Millisecond)

	e.clock.Set(e.renewAt())
	req := expect[*dataplane.CertRenewalRequest](t, c)
	csr := csrOf(t, req)
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&e.key.PublicKey) {
		t.Fatal("the CSR is not for the agent's key")
	}
	if !c.cert.Equal(e.cert) {
		t.Fatal("the connection does not use the enrolled certificate")
	}
	resp, renewed := e.success(t, csr.PublicKey.(*ecdsa.PublicKey), e.clock.Now().Add(-time.Minute))
	send(t, c, resp)

	if r := c.closeReason(t); r != "cert-renewed" {
		t.Fatalf("close reason %q", r)
	}
	c2 := e.gw.nextConn(t)
	if !c2.cert.Equal(renewed) {
		t.Fatalf("reconnected with serial %v, want the renewed %v", c2.cert.SerialNumber, renewed.SerialNumber)
	}
	expect[*dataplane.RouteAdvertise](t, c2)
	if got := e.read(t, "certs/agent.pem"); string(got) != resp.ClientCertPEM {
		t.Fatal("the renewed certificate was not written")
	}
	if got := e.read(t, "certs/gateway-ca.pem"); !bytes.Equal(got, e.p.caPEM) {
		t.Fatal("the CA file changed")
	}
	// The new certificate is not due: no further request.
	c2.quiet(t, 200*time.Millisecond)
	if e.logs.Contains("tunnel down") {
		t.Fatal("the reconnect after the renewal went through the backoff")
	}
	if n := a.RenewalFailures(); n != 0 {
		t.Fatalf("RenewalFailures = %d", n)
	}
}

// Refusals keep the connection and its sessions; retries follow the backoff
// on the injected clock; a later success renews.
func TestRenewalFailureKeepsServing(t *testing.T) {
	e := newEnv(t)
	target := echoTarget(t)
	e.clock.Set(e.renewAt())
	cfg := e.config()
	cfg.RenewBackoffMin, cfg.RenewBackoffMax = time.Minute, time.Hour
	a := start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)

	for i, wait := range []time.Duration{0, time.Minute, 2 * time.Minute} {
		e.clock.Advance(wait)
		expect[*dataplane.CertRenewalRequest](t, c)
		send(t, c, refusal("store unavailable"))
		waitFor(t, "a counted failure", func() bool { return a.RenewalFailures() == uint64(i+1) })

		s, resp := c.connect(t, target)
		if resp.Result != dataplane.ResultSuccess {
			t.Fatalf("after failure %d: session refused: %q", i+1, resp.Reason)
		}
		roundTrip(t, s, "still serving")
		// No retry before the backoff has passed on the clock.
		c.quiet(t, 100*time.Millisecond)
	}
	if !bytes.Equal(e.read(t, "certs/agent.pem"), e.certPEM) {
		t.Fatal("the certificate file changed after failures")
	}
	if !e.logs.Contains("certificate renewal failed; still using the current certificate") {
		t.Fatal("no warning logged")
	}

	e.clock.Advance(4 * time.Minute)
	req := expect[*dataplane.CertRenewalRequest](t, c)
	resp, _ := e.success(t, csrOf(t, req).PublicKey.(*ecdsa.PublicKey), e.clock.Now())
	send(t, c, resp)
	if r := c.closeReason(t); r != "cert-renewed" {
		t.Fatalf("close reason %q", r)
	}
	e.gw.nextConn(t)
	if n := a.RenewalFailures(); n != 3 {
		t.Fatalf("RenewalFailures = %d, want 3", n)
	}
}

// A timed-out request counts as a failure; its late answer, arriving after
// the next request was sent, is not taken for the next request's answer.
func TestRenewalTimeoutAndLateAnswer(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(e.renewAt())
	cfg := e.config()
	cfg.RenewTimeout = 500 * time.Millisecond
	a := start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)

	expect[*dataplane.CertRenewalRequest](t, c) // never answered in time
	waitFor(t, "the timeout counted", func() bool { return a.RenewalFailures() == 1 })

	e.clock.Advance(DefaultRenewBackoffMin)
	req := expect[*dataplane.CertRenewalRequest](t, c)
	// The late answer to the first request: a certificate for another key,
	// which the agent would refuse if it took it for the second answer.
	late, _ := e.success(t, &testtls.Key(t).PublicKey, e.clock.Now())
	send(t, c, late)
	// Give the agent time to read the late answer on its own (taking it
	// would show as a second failure), then answer the second request.
	c.quiet(t, 100*time.Millisecond)
	if n := a.RenewalFailures(); n != 1 {
		t.Fatalf("the late answer was taken for the second request's: RenewalFailures = %d", n)
	}
	resp, renewed := e.success(t, csrOf(t, req).PublicKey.(*ecdsa.PublicKey), e.clock.Now())
	send(t, c, resp)

	if r := c.closeReason(t); r != "cert-renewed" {
		t.Fatalf("close reason %q", r)
	}
	if c2 := e.gw.nextConn(t); !c2.cert.Equal(renewed) {
		t.Fatal("reconnected without the renewed certificate")
	}
	if n := a.RenewalFailures(); n != 1 {
		t.Fatalf("RenewalFailures = %d, want 1", n)
	}
}

// Success answers the agent must not install.
func TestRenewalRejectsBadAnswers(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(e.renewAt())
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)

	other := newTestPKI(t) // another CA, self-consistent
	cases := []struct {
		name   string
		answer func(pub *ecdsa.PublicKey) *dataplane.CertRenewalResponse
		why    string
	}{
		{"another key", func(*ecdsa.PublicKey) *dataplane.CertRenewalResponse {
			r, _ := e.success(t, &testtls.Key(t).PublicKey, e.clock.Now())
			return r
		}, "for another key"},
		{"another agent", func(pub *ecdsa.PublicKey) *dataplane.CertRenewalResponse {
			_, p := e.p.issue(t, pub, "00000000-0000-4000-8000-000000000001", e.clock.Now(), e.clock.Now().Add(testLifetime))
			return &dataplane.CertRenewalResponse{Version: 1, ClientCertPEM: string(p), CACertPEM: string(e.p.caPEM)}
		}, "lacks the agent's identity"},
		{"not signed by the CA sent", func(pub *ecdsa.PublicKey) *dataplane.CertRenewalResponse {
			_, p := other.issue(t, pub, testAgentID, e.clock.Now(), e.clock.Now().Add(testLifetime))
			return &dataplane.CertRenewalResponse{Version: 1, ClientCertPEM: string(p), CACertPEM: string(e.p.caPEM)}
		}, "does not verify against the CA sent"},
		{"a CA that does not verify the gateway", func(pub *ecdsa.PublicKey) *dataplane.CertRenewalResponse {
			_, p := other.issue(t, pub, testAgentID, e.clock.Now(), e.clock.Now().Add(testLifetime))
			return &dataplane.CertRenewalResponse{Version: 1, ClientCertPEM: string(p), CACertPEM: string(other.caPEM)}
		}, "does not verify the gateway's own certificate"},
		{"garbage", func(*ecdsa.PublicKey) *dataplane.CertRenewalResponse {
			return &dataplane.CertRenewalResponse{Version: 1, ClientCertPEM: "not a certificate", CACertPEM: string(e.p.caPEM)}
		}, "not a PEM certificate"},
	}
	for i, tc := range cases {
		if i > 0 {
			e.clock.Advance(DefaultRenewBackoffMax)
		}
		req := expect[*dataplane.CertRenewalRequest](t, c)
		send(t, c, tc.answer(csrOf(t, req).PublicKey.(*ecdsa.PublicKey)))
		waitFor(t, tc.name+" refused", func() bool { return a.RenewalFailures() == uint64(i+1) })
		waitFor(t, "a log line mentioning "+tc.why, func() bool { return e.logs.Contains(tc.why) })
	}
	if !bytes.Equal(e.read(t, "certs/agent.pem"), e.certPEM) || !bytes.Equal(e.read(t, "certs/gateway-ca.pem"), e.p.caPEM) {
		t.Fatal("a rejected answer was written")
	}
	e.gw.noConn(t, 50*time.Millisecond)
}

// The CSR is made from the key in ClientKeyPath, which must be the key the
// connection proved: a key replaced on disk is not sent.
func TestRenewalKeyFileReplaced(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(e.renewAt().Add(-time.Hour))
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)

	e.write(t, "certs/agent.key", testtls.KeyPEM(t, testtls.Key(t)))
	e.clock.Set(e.renewAt())
	waitFor(t, "a counted failure", func() bool { return a.RenewalFailures() == 1 })
	waitFor(t, "a log line naming the key mismatch", func() bool {
		return e.logs.Contains("is not the key of the connection's certificate")
	})
	c.quiet(t, 50*time.Millisecond) // nothing was sent
}

// A draining agent does not start a renewal: it would cut the sessions the
// drain waits for.
func TestNoRenewalWhileDraining(t *testing.T) {
	e := newEnv(t)
	target := echoTarget(t)
	e.clock.Set(e.renewAt().Add(-time.Hour))
	cfg := e.config()
	a := start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	s, resp := c.connect(t, target)
	if resp.Result != dataplane.ResultSuccess {
		t.Fatal(resp.Reason)
	}
	a.cancel()
	if adv := expect[*dataplane.RouteAdvertise](t, c); len(adv.Subnets) != 0 {
		t.Fatalf("routes not withdrawn: %+v", adv)
	}
	e.clock.Set(e.renewAt())
	c.quiet(t, 100*time.Millisecond) // no renewal while draining
	roundTrip(t, s, "draining")
	s.Close()
	if r := c.closeReason(t); r != "shutdown" {
		t.Fatalf("close reason %q", r)
	}
	a.wait(t)
	if a.RenewalFailures() != 0 || !bytes.Equal(e.read(t, "certs/agent.pem"), e.certPEM) {
		t.Fatal("a renewal was attempted while draining")
	}
}
