// Package renewal renews certificates while the gateway runs (DESIGN.md §4,
// §7): agent certificates on request over the control stream, with the key
// the agent already proved, and the gateway's own server certificate before
// it expires, with the same key.
package renewal

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
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
	outcomes  *prometheus.CounterVec
}

// NewAgents returns an Agents signing with authority and recording in
// store. outcomes, if not nil, counts every renewal by outcome ("renewed",
// "refused", "error").
func NewAgents(authority *pki.Authority, store AgentStore, outcomes *prometheus.CounterVec) (*Agents, error) {
	if authority == nil || store == nil {
		return nil, errors.New("renewal: authority and store are required")
	}
	return &Agents{authority: authority, store: store, outcomes: outcomes}, nil
}

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
		if a.outcomes != nil {
			a.outcomes.WithLabelValues(outcome).Inc()
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
