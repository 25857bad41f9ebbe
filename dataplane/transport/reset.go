package transport

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// Labels for StatelessResetKey: each end derives its key under its own
// label, so a key never serves two purposes and the gateway's and an
// agent's keys differ even if they came from the same secret.
const (
	// GatewayResetLabel derives the gateway's key from its token-signing
	// key, which every replica of a gateway shares and which survives
	// restarts.
	GatewayResetLabel = "outpost/v1 gateway QUIC stateless reset key"
	// AgentResetLabel derives an agent's key from the agent's private key.
	AgentResetLabel = "outpost/v1 agent QUIC stateless reset key"
)

// StatelessResetKey derives the key a quic.Transport makes stateless reset
// tokens from: HKDF-SHA256 of the PKCS#8 encoding of secret (an ECDSA,
// Ed25519 or RSA private key), with label as the HKDF info.
//
// A QUIC endpoint gives its peer a reset token for each connection ID it
// issues; the token is an HMAC of the connection ID under this key. When
// the same key is derived again after a crash, the restarted process answers
// a packet of a connection it no longer knows with a stateless reset the
// peer accepts (RFC 9000 §10.3), so the peer drops the dead connection at
// once instead of waiting for its idle timeout. The same secret and label
// always give the same key; the key reveals nothing about secret.
//
// It returns an error only when secret is not a private key x509 can
// encode.
func StatelessResetKey(secret any, label string) (*quic.StatelessResetKey, error) {
	if label == "" {
		return nil, errors.New("transport: stateless reset key: no label")
	}
	der, err := x509.MarshalPKCS8PrivateKey(secret)
	if err != nil {
		return nil, fmt.Errorf("transport: stateless reset key: %w", err)
	}
	b, err := hkdf.Key(sha256.New, der, nil, label, len(quic.StatelessResetKey{}))
	if err != nil {
		return nil, fmt.Errorf("transport: stateless reset key: %w", err)
	}
	var key quic.StatelessResetKey
	copy(key[:], b)
	return &key, nil
}
