package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The key depends on the secret and the label only.
func TestStatelessResetKeyDerivation(t *testing.T) {
	k1, k2 := newECKey(t), newECKey(t)
	derive := func(secret any, label string) quic.StatelessResetKey {
		t.Helper()
		k, err := StatelessResetKey(secret, label)
		if err != nil {
			t.Fatal(err)
		}
		return *k
	}
	if again, _ := StatelessResetKey(k1, GatewayResetLabel); *again != derive(k1, GatewayResetLabel) {
		t.Error("the same secret and label give different keys")
	}
	if derive(k1, GatewayResetLabel) == derive(k1, AgentResetLabel) {
		t.Error("two labels give the same key")
	}
	if derive(k1, GatewayResetLabel) == derive(k2, GatewayResetLabel) {
		t.Error("two secrets give the same key")
	}
	if derive(k1, GatewayResetLabel) == (quic.StatelessResetKey{}) {
		t.Error("zero key")
	}
	if _, err := StatelessResetKey("not a key", GatewayResetLabel); err == nil {
		t.Error("a string secret was accepted")
	}
	if _, err := StatelessResetKey(k1, ""); err == nil {
		t.Error("an empty label was accepted")
	}
}

// A server that vanished without closing its connections (a crash) and comes
// back on the same port with the same reset key resets the client's stale
// connection as soon as the client sends on it.
func TestStatelessResetAfterServerCrash(t *testing.T) {
	checkGoroutines(t)
	serverTLS, clientTLS := testTLS(t)
	key, err := StatelessResetKey(newECKey(t), GatewayResetLabel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	listen := func(addr string) (*quic.Transport, *quic.Listener) {
		t.Helper()
		udp, err := ListenUDP("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		tr := &quic.Transport{Conn: udp, StatelessResetKey: key}
		ln, err := tr.Listen(serverTLS, Config{}.QUIC())
		if err != nil {
			t.Fatal(err)
		}
		return tr, ln
	}
	tr1, ln1 := listen("127.0.0.1:0")
	addr := tr1.Conn.LocalAddr().String()
	client, err := quic.DialAddr(ctx, addr, clientTLS, Config{}.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseWithError(0, "")
	server, err := ln1.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.AcceptStream(ctx); err != nil {
		t.Fatal(err)
	}

	// The crash: closing the transport drops its connections without a
	// CONNECTION_CLOSE, and the socket goes away.
	ln1.Close()
	tr1.Close()
	tr1.Conn.Close()
	tr2, ln2 := listen(addr)
	defer func() {
		ln2.Close()
		tr2.Close()
		tr2.Conn.Close()
	}()

	// Data on the stale connection (a packet longer than a stateless reset,
	// as RFC 9000 §10.3 requires) draws the reset.
	if _, err := s.Write(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-client.Context().Done():
	case <-ctx.Done():
		t.Fatal("the stale connection was not reset")
	}
	if err := context.Cause(client.Context()); !errors.Is(err, &quic.StatelessResetError{}) {
		t.Fatalf("closed by %v, want a stateless reset", err)
	}
}
