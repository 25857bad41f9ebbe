package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// fakeStore answers GetAgent with agent, or err when set.
type fakeStore struct {
	mu    sync.Mutex
	agent store.Agent
	err   error
}

func (f *fakeStore) GetAgent(_ context.Context, id string) (store.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return store.Agent{}, f.err
	}
	if id != f.agent.ID {
		return store.Agent{}, store.ErrNotFound
	}
	return f.agent, nil
}

// An agent is told its identity is refused only when a retry cannot help;
// a store that does not answer makes the gateway say "gateway-unavailable",
// which the agent retries without counting it as a refusal.
func TestAdmissionCloseReasons(t *testing.T) {
	auth, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	id := uuid.New()
	issued, err := auth.SignAgent(csr, id, "office", "")
	if err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	live := store.Agent{ID: id.String(), Name: "office", SPKISHA256: issued.SPKISHA256}

	st := &fakeStore{}
	srv, err := New(Config{Authority: auth, Store: st, Registry: registry.New(time.Now), Logger: testlog.Logger(t, "tunnel")})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := transport.ListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pc.Close()
	})

	clientTLS := transport.ClientTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{issued.DER}, PrivateKey: key}},
		RootCAs:      auth.CAPool(),
		ServerName:   "127.0.0.1",
	})
	for _, tc := range []struct {
		name  string
		agent store.Agent
		err   error
		want  dataplane.CloseReason
	}{
		{"store down", live, errors.New("connection refused"), dataplane.CloseGatewayUnavailable},
		{"unknown agent", store.Agent{ID: uuid.NewString()}, nil, dataplane.CloseAgentNotAccepted},
		{"deleted agent", store.Agent{ID: live.ID, SPKISHA256: live.SPKISHA256, DeletedAt: &deleted}, nil, dataplane.CloseAgentNotAccepted},
		{"another key", store.Agent{ID: live.ID, SPKISHA256: "00"}, nil, dataplane.CloseAgentNotAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.mu.Lock()
			st.agent, st.err = tc.agent, tc.err
			st.mu.Unlock()
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			defer dcancel()
			conn, err := quic.DialAddr(dctx, pc.LocalAddr().String(), clientTLS, transport.Config{}.QUIC())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseWithError(0, "")
			select {
			case <-conn.Context().Done():
			case <-dctx.Done():
				t.Fatal("the gateway did not close the connection")
			}
			reason, remote, ok := transport.CloseReasonOf(context.Cause(conn.Context()))
			if !ok || !remote || reason != tc.want {
				t.Fatalf("closed with %q (remote %v, ok %v), want %q", reason, remote, ok, tc.want)
			}
		})
	}
}

// A known agent reconnecting while the store does not answer is admitted
// from the admission cache; one the gateway disconnected (DeleteAgent) is
// not, nor one the store never admitted: they are told to retry.
func TestAdmissionFromCache(t *testing.T) {
	auth, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	id := uuid.New()
	issued, err := auth.SignAgent(csr, id, "office", "")
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeStore{agent: store.Agent{ID: id.String(), Name: "office", SPKISHA256: issued.SPKISHA256}}
	reg := registry.New(time.Now)
	srv, err := New(Config{Authority: auth, Store: st, Registry: reg, Logger: testlog.Logger(t, "tunnel")})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := transport.ListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pc.Close()
	})
	clientTLS := transport.ClientTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{issued.DER}, PrivateKey: key}},
		RootCAs:      auth.CAPool(),
		ServerName:   "127.0.0.1",
	})
	// connect dials and reports whether the gateway registered the agent;
	// when it closes the connection instead, the close reason.
	connect := func(t *testing.T) (bool, dataplane.CloseReason) {
		t.Helper()
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		conn, err := quic.DialAddr(dctx, pc.LocalAddr().String(), clientTLS, transport.Config{}.QUIC())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		_, port, _ := net.SplitHostPort(conn.LocalAddr().String())
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if e, ok := reg.Lookup(id.String()); ok && strings.HasSuffix(e.RemoteAddr, ":"+port) {
				return true, ""
			}
			select {
			case <-conn.Context().Done():
				reason, _, _ := transport.CloseReasonOf(context.Cause(conn.Context()))
				return false, reason
			case <-dctx.Done():
				t.Fatal("neither admitted nor refused")
			case <-tick.C:
			}
		}
	}
	setErr := func(err error) {
		st.mu.Lock()
		st.err = err
		st.mu.Unlock()
	}

	setErr(errors.New("connection refused"))
	if ok, reason := connect(t); ok || reason != dataplane.CloseGatewayUnavailable {
		t.Fatalf("never admitted, store down: admitted %v, reason %q; want gateway-unavailable", ok, reason)
	}
	setErr(nil)
	if ok, _ := connect(t); !ok {
		t.Fatal("not admitted with the store up")
	}
	setErr(errors.New("connection refused"))
	if ok, reason := connect(t); !ok {
		t.Fatalf("a known agent with the store down: refused with %q, want admitted from the cache", reason)
	}
	srv.Disconnect(id.String(), string(dataplane.CloseAgentDeleted))
	if ok, reason := connect(t); ok || reason != dataplane.CloseGatewayUnavailable {
		t.Fatalf("a disconnected (deleted) agent with the store down: admitted %v, reason %q; want gateway-unavailable", ok, reason)
	}
}
