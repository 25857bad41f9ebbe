// Package renewal renews certificates while the gateway runs (DESIGN.md §4,
// §7): agent certificates on request over the control stream, with the key
// the agent already proved, and the gateway's own server certificate before
// it expires, with the same key.
package renewal

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/pki"
)

// AgentStore records a renewed agent certificate.
type AgentStore interface {
	UpdateAgentCert(ctx context.Context, id, spkiSHA256, serial string, notAfter time.Time) error
}

// Agents signs renewed agent certificates. Build it with NewAgents; it is
// safe for concurrent use.
type Agents struct {
	authority *pki.Authority
	store     AgentStore
	cfg       AgentsConfig

	mu   sync.Mutex
	last map[string]time.Time // guarded by mu: agent id → its last signed renewal
}

// Defaults of AgentsConfig.
const (
	// DefaultWindow: renewals are accepted once half of the certificate's
	// lifetime is gone (agents renew with a third left by default).
	DefaultWindow = 0.5
	// DefaultMinInterval is the least time between two renewals of one agent.
	DefaultMinInterval = time.Minute
)

// AgentsConfig tunes Agents; zero fields take the defaults.
type AgentsConfig struct {
	// Window is the part of a certificate's lifetime (NotAfter − NotBefore)
	// that must be left at most for a renewal to be accepted: 0.5 accepts
	// renewals in the second half of the lifetime, 1 at any time. If zero,
	// DefaultWindow.
	Window float64
	// MinInterval is the least time between two signed renewals of one
	// agent. If zero, DefaultMinInterval.
	MinInterval time.Duration
	// Outcomes, if set, counts every renewal by outcome ("renewed",
	// "refused", "throttled", "error").
	Outcomes *prometheus.CounterVec
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// NewAgents returns an Agents signing with authority and recording in store.
func NewAgents(authority *pki.Authority, store AgentStore, cfg AgentsConfig) (*Agents, error) {
	if authority == nil || store == nil {
		return nil, errors.New("renewal: authority and store are required")
	}
	if cfg.Window < 0 || cfg.Window > 1 {
		return nil, fmt.Errorf("renewal: window %v is not a part of the lifetime (0 < w ≤ 1)", cfg.Window)
	}
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	cfg.MinInterval = cmp.Or(cfg.MinInterval, DefaultMinInterval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Agents{authority: authority, store: store, cfg: cfg, last: map[string]time.Time{}}, nil
}

// admit checks that a renewal of cert for agentID is due and not too soon
// after the previous one, and reserves the slot; it returns the outcome
// label and an error for a refusal.
func (a *Agents) admit(agentID string, cert *x509.Certificate) (string, error) {
	now := a.cfg.Now()
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	left := cert.NotAfter.Sub(now)
	if window := time.Duration(float64(lifetime) * a.cfg.Window); left > window {
		return "refused", fmt.Errorf("renewal refused: the certificate has %v of %v left; renewals are accepted once %v or less is left",
			left.Round(time.Second), lifetime.Round(time.Second), window.Round(time.Second))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.last[agentID]; ok && now.Sub(prev) < a.cfg.MinInterval {
		return "throttled", fmt.Errorf("renewal refused: this agent renewed %v ago; at most one renewal per %v",
			now.Sub(prev).Round(time.Second), a.cfg.MinInterval)
	}
	if len(a.last) >= maxTracked {
		for id, t := range a.last {
			if now.Sub(t) >= a.cfg.MinInterval {
				delete(a.last, id)
			}
		}
	}
	a.last[agentID] = now
	return "", nil
}

// maxTracked is how many agents' last renewal times are kept before the
// expired ones are swept.
const maxTracked = 1024

// Renew signs a renewed certificate for an agent admitted with cert. The
// identity is the one proven by mTLS: the agent id and name come from cert,
// never from the CSR, and the CSR must carry the same key. The store is
// updated before the certificate is handed out. It has the signature of
// tunnel.Renewer.
func (a *Agents) Renew(ctx context.Context, agentID string, cert *x509.Certificate, csrPEM string) (certPEM, caPEM string, err error) {
	outcome := "error"
	defer func() {
		if err == nil {
			outcome = "renewed"
		}
		if a.cfg.Outcomes != nil {
			a.cfg.Outcomes.WithLabelValues(outcome).Inc()
		}
	}()
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		outcome = "refused"
		return "", "", fmt.Errorf("renewal CSR: %w", err)
	}
	if transport.SPKIHashHex(csr.RawSubjectPublicKeyInfo) != transport.SPKISHA256(cert) {
		outcome = "refused"
		return "", "", fmt.Errorf("renewal CSR: key differs from the agent's current key; renewal keeps the key")
	}
	id, err := pki.AgentIDFromCert(cert)
	if err != nil {
		return "", "", err
	}
	if why, err := a.admit(agentID, cert); err != nil {
		outcome = why
		return "", "", err
	}
	hostname := ""
	if len(cert.DNSNames) > 0 {
		hostname = cert.DNSNames[0]
	}
	issued, err := a.authority.SignAgent(csr, id, cert.Subject.CommonName, hostname)
	if err != nil {
		return "", "", fmt.Errorf("sign renewed certificate: %w", err)
	}
	if err := a.store.UpdateAgentCert(ctx, agentID, issued.SPKISHA256, issued.Serial, issued.NotAfter); err != nil {
		return "", "", fmt.Errorf("record renewed certificate: %w", err)
	}
	return string(issued.PEM), string(a.authority.CACertPEM()), nil
}

// DefaultServerCheck is how often RunServer checks the server certificate's
// expiry and names.
const DefaultServerCheck = time.Hour

// RunServer re-issues the server certificate of authority (same key) when it
// nears expiry or its names changed, checking every interval (if zero,
// DefaultServerCheck) until ctx ends. New TLS handshakes pick a renewed
// certificate up at once. log may be nil.
func RunServer(ctx context.Context, authority *pki.Authority, interval time.Duration, log hclog.Logger) {
	if interval <= 0 {
		interval = DefaultServerCheck
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			renewed, err := authority.RenewServerIfNeeded()
			switch {
			case err != nil:
				log.Error("server certificate renewal failed; retrying at the next check", "error", err, "interval", interval)
			case renewed:
				log.Info("server certificate renewed with the same key", "not_after", authority.ServerCert().NotAfter)
			}
		}
	}
}
