package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/registry"
)

// peerRecorder is a PeerServer that counts the connections handed to it
// and holds each until it or the tunnel ends.
type peerRecorder struct{ conns atomic.Int32 }

func (p *peerRecorder) ServeConn(ctx context.Context, conn *quic.Conn, _ LocalOpener) {
	p.conns.Add(1)
	select {
	case <-ctx.Done():
	case <-conn.Context().Done():
	}
	conn.CloseWithError(0, "")
}

// With a peer link, the listener hands connections that negotiate the peer
// ALPN to the PeerServer, never to agent admission; agent connections keep
// working, and a stream an agent opens besides its control stream is reset.
func TestPeerConnectionsAndAgentStreams(t *testing.T) {
	peers := &peerRecorder{}
	const alpn = "test-peer/1"
	f := newAdmitFixtureWith(t, func(c *Config) {
		c.Peers = peers
		c.PeerTLS = &tls.Config{
			MinVersion: tls.VersionTLS13, NextProtos: []string{alpn},
			GetCertificate: c.Authority.GetCertificate,
		}
	})
	f.answer(f.live, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peerTLS := f.clientTLS.Clone()
	peerTLS.NextProtos = []string{alpn}
	pc, err := quic.DialAddr(ctx, f.addr, peerTLS, transport.Config{}.QUIC())
	if err != nil {
		t.Fatalf("a peer's handshake: %v", err)
	}
	defer pc.CloseWithError(0, "")
	for peers.conns.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the peer connection never reached the PeerServer")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, ok := f.reg.Lookup(f.live.ID); ok {
		t.Fatal("a peer connection was admitted as the agent")
	}

	conn, err := quic.DialAddr(ctx, f.addr, f.clientTLS, transport.Config{}.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := dataplane.NewControlWriter(ctrl).Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	extra, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	extra.Write([]byte("x"))
	_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = extra.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != relay.ErrorCodeReset || !se.Remote {
		t.Fatalf("the agent's second stream: %v, want reset by the gateway", err)
	}
	if peers.conns.Load() != 1 {
		t.Errorf("%d connections handed to the PeerServer, want 1", peers.conns.Load())
	}
	for {
		if _, ok := f.reg.Lookup(f.live.ID); ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the agent was not registered")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if conn.Context().Err() != nil {
		t.Fatalf("the agent connection ended: %v", context.Cause(conn.Context()))
	}
}

// Peers without PeerTLS (or its ALPN) is a configuration error.
func TestPeersNeedTLS(t *testing.T) {
	auth, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, peerTLS := range []*tls.Config{nil, {}} {
		_, err := New(Config{Authority: auth, Store: &fakeStore{}, Registry: registry.New(time.Now), Peers: &peerRecorder{}, PeerTLS: peerTLS})
		if err == nil {
			t.Errorf("New with Peers and PeerTLS %v succeeded", peerTLS)
		}
	}
}

// remoteFunc is a Remote made of a function.
type remoteFunc func(ctx context.Context, agentID string) (*RemoteStream, error)

func (f remoteFunc) Forward(ctx context.Context, agentID string, _ dataplane.SessionID, _ []byte) (*RemoteStream, error) {
	return f(ctx, agentID)
}

// An agent not connected here goes to Remote; its failure is the session's,
// and a Remote that takes longer than the connect timeout is
// ErrConnectTimeout, as a local agent would be.
func TestRequestThroughRemote(t *testing.T) {
	auth, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	remote := remoteFunc(func(ctx context.Context, agentID string) (*RemoteStream, error) {
		asked.Add(1)
		if agentID == "nowhere" {
			return nil, &AgentError{AgentID: agentID, Err: ErrNotConnected, Reason: "no replica holds it"}
		}
		<-ctx.Done()
		return nil, &AgentError{AgentID: agentID, Err: context.Cause(ctx)}
	})
	s, err := New(Config{Authority: auth, Store: &fakeStore{}, Registry: registry.New(time.Now), Remote: remote,
		ConnectTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var ae *AgentError
	if _, err := s.Request(context.Background(), "nowhere", dataplane.SessionID{}, "127.0.0.1:22"); !errors.As(err, &ae) ||
		!errors.Is(err, ErrNotConnected) || ae.Reason != "no replica holds it" {
		t.Errorf("Request for an agent no replica holds: %v", err)
	}
	if _, err := s.Request(context.Background(), "slow", dataplane.SessionID{}, "127.0.0.1:22"); !errors.Is(err, ErrConnectTimeout) {
		t.Errorf("Request through a slow replica: %v, want ErrConnectTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Request(ctx, "slow", dataplane.SessionID{}, "127.0.0.1:22"); !errors.Is(err, context.Canceled) {
		t.Errorf("Request cancelled by its caller: %v, want context.Canceled", err)
	}
	if asked.Load() != 3 {
		t.Errorf("Remote asked %d times, want 3", asked.Load())
	}
	if _, err := s.RequestLocal(context.Background(), "nowhere", dataplane.SessionID{}, "127.0.0.1:22"); !errors.Is(err, ErrNotConnected) || asked.Load() != 3 {
		t.Errorf("RequestLocal: %v, and Remote asked %d times; want not connected without asking", err, asked.Load())
	}
}

// RequestLocal, what a peer's forwarded session uses, refuses an agent
// whose connection went quiet; Request still tries it.
func TestRequestLocalRefusesUnresponsive(t *testing.T) {
	auth, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(time.Now)
	s, err := New(Config{Authority: auth, Store: &fakeStore{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := &registry.Entry{AgentID: "quiet", Name: "quiet", Conn: closeRecorder{}}
	reg.Register(e)
	reg.SetSilent(e, true)
	if _, err := s.RequestLocal(context.Background(), "quiet", dataplane.SessionID{}, "127.0.0.1:22"); !errors.Is(err, ErrUnresponsive) ||
		!strings.Contains(err.Error(), "unresponsive") {
		t.Errorf("RequestLocal to an unresponsive agent: %v, want ErrUnresponsive", err)
	}
}

// closeRecorder is a registry.Conn that does nothing.
type closeRecorder struct{}

func (closeRecorder) CloseWithReason(string) {}
