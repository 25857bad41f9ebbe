package transport

import (
	"crypto/tls"

	"github.com/outposthq/outpost/dataplane"
)

// ALPN is the application protocol both ends negotiate on the QUIC
// connection (DESIGN.md §3); a peer offering anything else fails the
// handshake. It is the codec's constant, restated for callers of this package.
const ALPN = dataplane.ALPN

// ServerTLS returns a copy of base for the gateway's QUIC listener with TLS
// 1.3 as the only version and ALPN as the only application protocol.
// Everything else (certificates, ClientAuth, ClientCAs, VerifyConnection) is
// kept from base, which is never modified. A nil base gives a config with
// only those two settings.
func ServerTLS(base *tls.Config) *tls.Config {
	return tunnelTLS(base)
}

// ClientTLS returns a copy of base for the agent's QUIC dialer with TLS 1.3
// as the only version and ALPN as the only application protocol. Everything
// else (ServerName, RootCAs, Certificates, VerifyConnection) is kept from
// base, which is never modified. A nil base gives a config with only those
// two settings.
func ClientTLS(base *tls.Config) *tls.Config {
	return tunnelTLS(base)
}

func tunnelTLS(base *tls.Config) *tls.Config {
	var c *tls.Config
	if base == nil {
		c = &tls.Config{}
	} else {
		c = base.Clone()
	}
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	return c
}
