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

// admitFixture is a tunnel Server on loopback in front of a fakeStore,
// and the identity of one agent enrolled with it.
type admitFixture struct {
	srv       *Server
	reg       *registry.Registry
	st        *fakeStore
	addr      string
	clientTLS *tls.Config
	live      store.Agent // the agent as stored
}

func newAdmitFixture(t *testing.T) *admitFixture {
	t.Helper()
	return newAdmitFixtureWith(t, nil)
}

// newAdmitFixtureWith is newAdmitFixture with mutate applied to the
// tunnel's Config (its Authority is the fixture's CA).
func newAdmitFixtureWith(t *testing.T, mutate func(*Config)) *admitFixture {
	t.Helper()
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
	f := &admitFixture{
		st:   &fakeStore{},
		reg:  registry.New(time.Now),
		live: store.Agent{ID: id.String(), Name: "office", SPKISHA256: issued.SPKISHA256},
		clientTLS: transport.ClientTLS(&tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{issued.DER}, PrivateKey: key}},
			RootCAs:      auth.CAPool(),
			ServerName:   "127.0.0.1",
		}),
	}
	cfg := Config{Authority: auth, Store: f.st, Registry: f.reg, Logger: testlog.Logger(t, "tunnel")}
	if mutate != nil {
		mutate(&cfg)
	}
	f.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := transport.ListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pc.Close()
	})
	return f
}

// answer makes the store answer GetAgent with agent, or fail with err.
func (f *admitFixture) answer(agent store.Agent, err error) {
	f.st.mu.Lock()
	defer f.st.mu.Unlock()
	f.st.agent, f.st.err = agent, err
}

// connect dials as the agent and reports whether the gateway registered
// this connection; when it closes it instead, the close reason.
func (f *admitFixture) connect(t *testing.T) (bool, dataplane.CloseReason) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, f.addr, f.clientTLS, transport.Config{}.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	_, port, _ := net.SplitHostPort(conn.LocalAddr().String())
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if e, ok := f.reg.Lookup(f.live.ID); ok && strings.HasSuffix(e.RemoteAddr, ":"+port) {
			return true, ""
		}
		select {
		case <-conn.Context().Done():
			reason, remote, ok := transport.CloseReasonOf(context.Cause(conn.Context()))
			if !ok || !remote {
				t.Fatalf("closed by %v (remote %v, ok %v), not by the gateway", context.Cause(conn.Context()), remote, ok)
			}
			return false, reason
		case <-ctx.Done():
			t.Fatal("neither admitted nor refused")
		case <-tick.C:
		}
	}
}

// An agent is told its identity is refused only when a retry cannot help;
// a store that does not answer makes the gateway say "gateway-unavailable",
// which the agent retries without counting it as a refusal.
func TestAdmissionCloseReasons(t *testing.T) {
	f := newAdmitFixture(t)
	deleted := time.Now()
	live := f.live
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
			f.answer(tc.agent, tc.err)
			if ok, reason := f.connect(t); ok || reason != tc.want {
				t.Fatalf("admitted %v, closed with %q; want closed with %q", ok, reason, tc.want)
			}
		})
	}
}

// A known agent reconnecting while the store does not answer is admitted
// from the admission cache; one the gateway disconnected (DeleteAgent) is
// not, nor one the store never admitted: they are told to retry.
func TestAdmissionFromCache(t *testing.T) {
	f := newAdmitFixture(t)
	down := errors.New("connection refused")
	f.answer(f.live, down)
	if ok, reason := f.connect(t); ok || reason != dataplane.CloseGatewayUnavailable {
		t.Fatalf("never admitted, store down: admitted %v, reason %q; want gateway-unavailable", ok, reason)
	}
	f.answer(f.live, nil)
	if ok, _ := f.connect(t); !ok {
		t.Fatal("not admitted with the store up")
	}
	f.answer(f.live, down)
	if ok, reason := f.connect(t); !ok {
		t.Fatalf("a known agent with the store down: refused with %q, want admitted from the cache", reason)
	}
	f.srv.Disconnect(f.live.ID, string(dataplane.CloseAgentDeleted))
	if ok, reason := f.connect(t); ok || reason != dataplane.CloseGatewayUnavailable {
		t.Fatalf("a disconnected (deleted) agent with the store down: admitted %v, reason %q; want gateway-unavailable", ok, reason)
	}
	// A key the cached record does not know (a renewal it missed): retry,
	// never a refusal, which only the store may give.
	f.answer(store.Agent{ID: f.live.ID, Name: "office", SPKISHA256: "00"}, nil)
	if ok, reason := f.connect(t); ok || reason != dataplane.CloseAgentNotAccepted {
		t.Fatalf("another key, store up: admitted %v, reason %q; want agent-not-accepted", ok, reason)
	}
	f.answer(f.live, down)
	if ok, reason := f.connect(t); ok || reason != dataplane.CloseGatewayUnavailable {
		t.Fatalf("a key the cached record does not know, store down: admitted %v, reason %q; want gateway-unavailable", ok, reason)
	}
}
