package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	"github.com/outposthq/outpost/server/internal/pki"
)

// renewAgentCert signs a renewed certificate for an agent admitted with cert
// (DESIGN.md §4, §7). The identity is the one proven by mTLS: the agent id and
// name come from cert, never from the CSR, and the CSR must carry the same
// key. The store is updated before the certificate is handed out. Every
// outcome is counted in outpost_agent_cert_renewals_total.
func (g *Gateway) renewAgentCert(ctx context.Context, agentID string, cert *x509.Certificate, csrPEM string) (certPEM, caPEM string, err error) {
	outcome := "error"
	defer func() {
		if err == nil {
			outcome = "renewed"
		}
		g.metrics.CertRenewals.WithLabelValues(outcome).Inc()
	}()
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		outcome = "refused"
		return "", "", fmt.Errorf("renewal CSR: %w", err)
	}
	if spkiHex(csr.RawSubjectPublicKeyInfo) != pki.SPKISHA256(cert) {
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
	issued, err := g.pki.SignAgent(csr, id, cert.Subject.CommonName, hostname)
	if err != nil {
		return "", "", fmt.Errorf("sign renewed certificate: %w", err)
	}
	if err := g.store.UpdateAgentCert(ctx, agentID, issued.SPKISHA256, issued.Serial, issued.NotAfter); err != nil {
		return "", "", fmt.Errorf("record renewed certificate: %w", err)
	}
	return string(issued.PEM), string(g.pki.CACertPEM()), nil
}

func spkiHex(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}
