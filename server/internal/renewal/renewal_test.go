package renewal

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testtls"
	"github.com/outposthq/outpost/server/internal/pki"
)

type nopStore struct{}

func (nopStore) UpdateAgentCert(context.Context, string, string, string, time.Time) error { return nil }

// Renewals are accepted only inside the window (the last part of the
// lifetime) and at most once per MinInterval per agent; each refusal says
// why and is counted.
func TestRenewalWindowAndThrottle(t *testing.T) {
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	ca, err := pki.LoadOrCreate(t.TempDir(), pki.Config{AgentValidity: 100 * time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := string(testtls.CSR(t, testtls.Key(t), &x509.CertificateRequest{}))
	csr, _ := pki.ParseCSR([]byte(csrPEM))
	id := uuid.New()
	issued, err := ca.SignAgent(csr, id, "office", "")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"outcome"})
	a, err := NewAgents(ca, nopStore{}, AgentsConfig{Outcomes: outcomes, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	renew := func() error {
		_, _, err := a.Renew(context.Background(), id.String(), cert, csrPEM)
		return err
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	// Just before half the lifetime is gone: refused.
	clk.Set(cert.NotAfter.Add(-lifetime/2 - time.Second))
	if err := renew(); err == nil || !strings.Contains(err.Error(), "renewals are accepted once") {
		t.Fatalf("renewal outside the window: %v", err)
	}
	// Inside the window: renewed; again within a minute: throttled.
	clk.Set(cert.NotAfter.Add(-lifetime / 2))
	if err := renew(); err != nil {
		t.Fatalf("renewal inside the window: %v", err)
	}
	clk.Advance(time.Minute - time.Second)
	if err := renew(); err == nil || !strings.Contains(err.Error(), "at most one renewal per 1m0s") {
		t.Fatalf("second renewal within a minute: %v", err)
	}
	clk.Advance(time.Second)
	if err := renew(); err != nil {
		t.Fatalf("renewal a minute later: %v", err)
	}
	for outcome, want := range map[string]float64{"refused": 1, "throttled": 1, "renewed": 2} {
		if got := testutil.ToFloat64(outcomes.WithLabelValues(outcome)); got != want {
			t.Errorf("%s counted %v, want %v", outcome, got, want)
		}
	}
	if _, err := NewAgents(ca, nopStore{}, AgentsConfig{Window: 1.5}); err == nil {
		t.Fatal("window 1.5 accepted")
	}
}
