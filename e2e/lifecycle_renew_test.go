package e2e

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testtls"
	"github.com/outposthq/outpost/server"
)

// The agent renews its certificate over the control stream when a third of
// its lifetime is left, writes it, reconnects with it at once, and the store
// records the new expiry. The gateway issues 90-second certificates; the
// agent's clock is moved to the renewal time rather than waiting for it
// (the gateway backdates NotBefore by a minute, so with a validity of only a
// few seconds a fresh certificate would already be due).
func TestLifecycleCertRenewal(t *testing.T) {
	const validity = 90 * time.Second
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.AgentCertValidity = server.Duration(validity)
		// Only the agent's clock moves to the renewal time: let the
		// gateway accept a renewal at any point of the lifetime.
		c.RenewalWindow = 1
	})
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	certPath := filepath.Join(dir, "certs/agent.pem")
	caBefore, err := os.ReadFile(filepath.Join(dir, "certs/gateway-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	old := lcReadCert(t, certPath)
	if left := time.Until(old.NotAfter); left > validity || left < validity-30*time.Second {
		t.Fatalf("enrolled certificate has %v left, want about the gateway's %v", left, validity)
	}

	clock := &lcClock{}
	opts, _ := lifecycleAgent(t, dir)
	opts.Now = clock.Now
	opts.RenewCheckInterval = 20 * time.Millisecond
	ra := startAgent(t, opts)
	a1 := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	if got := a1.GetCertNotAfter().AsTime(); !got.Equal(old.NotAfter) {
		t.Fatalf("API cert_not_after %v, want %v", got, old.NotAfter)
	}
	target := tcpServer(t, echo)
	lcEcho(t, gw, id, target, "before the renewal")

	// Certificate times have a resolution of one second: let one pass
	// since the enrollment so that the renewed NotAfter is strictly later.
	time.Sleep(time.Until(old.NotAfter.Add(-validity + time.Second)))
	renewAt := old.NotAfter.Add(-old.NotAfter.Sub(old.NotBefore) / 3)
	clock.Set(time.Until(renewAt) + time.Second)

	var renewed *x509.Certificate
	lcUntil(t, 10*time.Second, "the renewed certificate on disk", func() bool {
		renewed = lcReadCert(t, certPath)
		return renewed.NotAfter.After(old.NotAfter)
	})
	clock.Set(0)

	switch {
	case !bytes.Equal(renewed.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo):
		t.Fatal("the renewed certificate has another key")
	case renewed.SerialNumber.Cmp(old.SerialNumber) == 0:
		t.Fatal("same serial")
	case renewed.Subject.CommonName != old.Subject.CommonName || !slices.EqualFunc(renewed.URIs, old.URIs, func(a, b *url.URL) bool { return a.String() == b.String() }):
		t.Fatalf("identity changed: %q %v, was %q %v", renewed.Subject.CommonName, renewed.URIs, old.Subject.CommonName, old.URIs)
	case renewed.NotAfter.Sub(renewed.NotBefore) != old.NotAfter.Sub(old.NotBefore):
		t.Fatalf("lifetime %v, want %v", renewed.NotAfter.Sub(renewed.NotBefore), old.NotAfter.Sub(old.NotBefore))
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, "certs/gateway-ca.pem")); !bytes.Equal(caAfter, caBefore) {
		t.Fatal("the CA file changed")
	}

	lcUntil(t, 10*time.Second, "a new connection with the renewed certificate in the API", func() bool {
		a := gw.agentView(id)
		return a.GetStatus() == outpostv1.AgentStatus_AGENT_STATUS_ONLINE &&
			a.GetConnectedAt().AsTime().After(a1.GetConnectedAt().AsTime()) &&
			a.GetCertNotAfter().AsTime().Equal(renewed.NotAfter)
	})
	lcEcho(t, gw, id, target, "after the renewal")
	if n := ra.r.RenewalFailures(); n != 0 {
		t.Fatalf("RenewalFailures = %d", n)
	}
}

// A hand-rolled agent renews over its control stream: a CSR with another
// key is refused; a CSR with the right key but a foreign subject gets a
// certificate for the identity proven by mTLS, not the CSR's.
func TestLifecycleRenewalIdentity(t *testing.T) {
	// The certificates are fresh: accept renewals at any point of their
	// lifetime (the window itself is tested in package renewal).
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.RenewalWindow = 1 })
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs/agent.pem"), filepath.Join(dir, "certs/agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	enrolled := lcReadCert(t, filepath.Join(dir, "certs/agent.pem"))
	conn := rawDial(t, gw, pair)
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	w, r := dataplane.NewControlWriter(ctrl), dataplane.NewControlReader(ctrl)
	if err := w.Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)

	ask := func(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) dataplane.CertRenewalResponse {
		t.Helper()
		csr := testtls.CSR(t, key, tmpl)
		if err := w.Send(&dataplane.CertRenewalRequest{Version: dataplane.ProtocolVersion, CSRPEM: string(csr)}); err != nil {
			t.Fatal(err)
		}
		ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
		msg, err := r.ReadControl()
		if err != nil {
			t.Fatal(err)
		}
		resp, ok := msg.(*dataplane.CertRenewalResponse)
		if !ok {
			t.Fatalf("got %T, want a CertRenewalResponse", msg)
		}
		return *resp
	}

	t.Run("another key is refused", func(t *testing.T) {
		resp := ask(t, testtls.Key(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "office"}})
		if resp.Result != dataplane.ResultError || !strings.Contains(resp.Reason, "key") {
			t.Fatalf("got %v %q, want an Error about the key", resp.Result, resp.Reason)
		}
		if got := gw.agentView(id).GetCertNotAfter().AsTime(); !got.Equal(enrolled.NotAfter) {
			t.Fatalf("the refused renewal changed cert_not_after to %v", got)
		}
	})

	t.Run("a foreign subject keeps the mTLS identity", func(t *testing.T) {
		foreign, _ := url.Parse("urn:uuid:11111111-2222-4333-8444-555555555555")
		resp := ask(t, pair.PrivateKey.(crypto.Signer), &x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: "intruder", Organization: []string{"Evil"}},
			DNSNames: []string{"evil.example"},
			URIs:     []*url.URL{foreign},
		})
		if resp.Result != dataplane.ResultSuccess {
			t.Fatalf("refused: %q", resp.Reason)
		}
		block, _ := pem.Decode([]byte(resp.ClientCertPEM))
		if block == nil {
			t.Fatal("no PEM certificate")
		}
		got, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(resp.CACertPEM)) {
			t.Fatal("no CA in the answer")
		}
		if _, err := got.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("renewed certificate does not verify: %v", err)
		}
		switch {
		case got.Subject.CommonName != "office" || len(got.Subject.Organization) != 0:
			t.Fatalf("subject %v, want the enrolled CN only", got.Subject)
		case len(got.URIs) != 1 || got.URIs[0].String() != "urn:uuid:"+id:
			t.Fatalf("URIs %v, want urn:uuid:%s", got.URIs, id)
		case slices.Contains(got.DNSNames, "evil.example"):
			t.Fatalf("DNS SANs %v taken from the CSR", got.DNSNames)
		case !bytes.Equal(got.RawSubjectPublicKeyInfo, enrolled.RawSubjectPublicKeyInfo):
			t.Fatal("another key")
		case got.SerialNumber.Cmp(enrolled.SerialNumber) == 0:
			t.Fatal("same serial")
		}
		if api := gw.agentView(id).GetCertNotAfter().AsTime(); !api.Equal(got.NotAfter) {
			t.Fatalf("API cert_not_after %v, want the renewed %v", api, got.NotAfter)
		}
	})

	// Neither renewal closed the connection.
	if s := gw.agentView(id).GetStatus(); s != outpostv1.AgentStatus_AGENT_STATUS_ONLINE {
		t.Fatalf("status %v after the renewals", s)
	}
	code, metrics := gw.restGet("/metrics")
	for _, want := range []string{`outpost_agent_cert_renewals_total{outcome="refused"} 1`, `outpost_agent_cert_renewals_total{outcome="renewed"} 1`} {
		if code != 200 || !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}
