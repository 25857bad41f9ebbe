package server

import (
	"cmp"
	"context"
	"strings"
	"time"

	"github.com/outposthq/outpost/server/internal/console"
	"github.com/outposthq/outpost/server/internal/renewal"
)

// ConsolePath is where the web console is served on the API port.
const ConsolePath = console.Path

// enrolledBy is the id of the agent that enrolled with the enrollment
// token jti, or "" while none has: the console's enroll page waits for it.
func (g *Gateway) enrolledBy(ctx context.Context, jti string) (string, error) {
	toks, err := g.store.ListEnrollmentTokens(ctx)
	if err != nil {
		return "", err
	}
	for _, t := range toks {
		if t.JTI == jti && t.ConsumedAt != nil {
			return t.AgentID, nil
		}
	}
	return "", nil
}

// renewBefore is how long before expiry an agent certificate is renewed:
// the renewal window's part of its lifetime.
func (c Config) renewBefore() time.Duration {
	validity := cmp.Or(time.Duration(c.AgentCertValidity), DefaultAgentCertValidity)
	return time.Duration(float64(validity) * cmp.Or(c.RenewalWindow, renewal.DefaultWindow))
}

// ConsoleURL is the web console's URL on this gateway's public API URL.
func (g *Gateway) ConsoleURL() string { return strings.TrimSuffix(g.cfg.PublicURL, "/") + ConsolePath }
