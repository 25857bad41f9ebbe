package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testpg"
)

// quicServerCert returns the certificate r's QUIC agent listener presents,
// read during a handshake that the client then aborts.
func quicServerCert(t *testing.T, r *running) *x509.Certificate {
	t.Helper()
	var got *x509.Certificate
	errSeen := errors.New("certificate seen")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, r.g.QUICAddr().String(), transport.ClientTLS(&tls.Config{
		RootCAs:    r.pool,
		ServerName: "127.0.0.1",
		VerifyConnection: func(cs tls.ConnectionState) error {
			got = cs.PeerCertificates[0]
			return errSeen
		},
	}), nil)
	if err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("the handshake completed")
	}
	if got == nil {
		t.Fatalf("no server certificate seen: %v", err)
	}
	return got
}

// A gateway on PostgreSQL, a cluster member, presents on its QUIC agent
// listener a server certificate that names its replica (the id in its data
// directory); a gateway on SQLite, a cluster of one, names none.
func TestServerCertificateNamesReplica(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		g, err := New(Config{DataDir: t.TempDir(), Store: testpg.DSN(t), SealKeyFile: newSealKey(t), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		r := run(t, g)
		want := g.replicaID // from the data directory (TestClusterOfOne)
		if want == "" {
			t.Fatal("no replica id")
		}
		if id, ok := transport.ReplicaIDFromCert(quicServerCert(t, r)); !ok || id != want {
			t.Fatalf("the QUIC listener's certificate names replica %q (%v), want %q", id, ok, want)
		}
	})
	t.Run("sqlite", func(t *testing.T) {
		g, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		cert := quicServerCert(t, run(t, g))
		if id, ok := transport.ReplicaIDFromCert(cert); ok || len(cert.URIs) != 0 {
			t.Fatalf("a SQLite gateway's certificate names replica %q (URIs %v)", id, cert.URIs)
		}
	})
}
