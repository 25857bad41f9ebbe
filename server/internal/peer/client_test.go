package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/cluster"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// refuser is a LocalOpener whose agents are never there (or always busy).
type refuser struct{ err error }

func (r refuser) RequestLocal(_ context.Context, agentID string, _ dataplane.SessionID, _ string) (*tunnel.Pending, error) {
	return nil, &tunnel.AgentError{AgentID: agentID, Err: r.err, Reason: "busy, busy"}
}

// directory places every agent on the same replicas, in order.
type directory struct {
	replicas []cluster.Gateway
	lookups  atomic.Int32
}

func (d *directory) AgentReplicas(_ context.Context, ids []string) (map[string][]string, error) {
	d.lookups.Add(1)
	out := map[string][]string{}
	for _, id := range ids {
		for _, r := range d.replicas {
			out[id] = append(out[id], r.ID)
		}
	}
	return out, nil
}

func (d *directory) Gateways(context.Context) ([]cluster.Gateway, error) {
	return d.replicas, nil
}

// at is a serving replica named name, with identity id, at addr.
func at(id *Identity, name, addr string) cluster.Gateway {
	return cluster.Gateway{Replica: store.Replica{ID: id.ReplicaID(), Name: name, PeerEndpoint: addr}, State: cluster.Serving}
}

// replicaSide is the accepting side of the peer link: a QUIC listener
// serving peer connections with a Server, until the test ends.
type replicaSide struct {
	addr  string
	conns atomic.Int32 // connections accepted
	live  atomic.Int32 // connections being served
}

func serveReplica(t *testing.T, id *Identity, local tunnel.LocalOpener) *replicaSide {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.Listen(id.ServerTLS(), &quic.Config{MaxIncomingStreams: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := NewServer(ServerConfig{Logger: testlog.Logger(t, "replica")})
	rs := &replicaSide{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			rs.conns.Add(1)
			rs.live.Add(1)
			wg.Go(func() {
				defer rs.live.Add(-1)
				srv.ServeConn(ctx, conn, local)
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
		tr.Close()
		pc.Close()
	})
	return rs
}

// pair returns the cluster CA and the identities of two replicas.
func pair(t *testing.T) (ca *pki.Authority, a, b *Identity) {
	t.Helper()
	ca, err := pki.LoadOrCreate(t.TempDir(), pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if a, err = NewIdentity(ca, uuid.NewString(), nil); err != nil {
		t.Fatal(err)
	}
	if b, err = NewIdentity(ca, uuid.NewString(), nil); err != nil {
		t.Fatal(err)
	}
	return ca, a, b
}

func newClient(t *testing.T, id *Identity, dir Directory, idle time.Duration) *Client {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(ClientConfig{Identity: id, Directory: dir, PacketConn: pc, IdleTimeout: idle, Logger: testlog.Logger(t, "client")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func until(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func request(t *testing.T, id dataplane.SessionID) []byte {
	t.Helper()
	req := dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: id, Target: "127.0.0.1:22"}
	b, err := req.AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Concurrent first uses share one dial and one connection; a refusal
// comes back as an *tunnel.AgentError naming the replica; the link closes
// once idle, and the next use dials again.
func TestClientSharesOneLinkAndClosesIdle(t *testing.T) {
	_, a, b := pair(t)
	side := serveReplica(t, a, refuser{tunnel.ErrNotConnected})
	dir := &directory{replicas: []cluster.Gateway{at(a, "gw-a", side.addr)}}
	c := newClient(t, b, dir, 200*time.Millisecond)
	agentID := uuid.NewString()

	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			sid := dataplane.SessionID(uuid.New())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Forward(ctx, agentID, sid, request(t, sid))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var ae *tunnel.AgentError
		if !errors.As(err, &ae) || !errors.Is(err, tunnel.ErrNotConnected) || ae.AgentID != agentID ||
			!strings.Contains(ae.Reason, "gw-a ("+a.ReplicaID()[:8]+") no longer holds it") {
			t.Errorf("Forward: %v, want the agent not connected at gw-a", err)
		}
	}
	if got := side.conns.Load(); got != 1 {
		t.Errorf("%d connections for %d concurrent sessions, want 1", got, n)
	}
	until(t, 5*time.Second, "the idle link closed on both ends", func() bool { return c.Links() == 0 && side.live.Load() == 0 })

	sid := dataplane.SessionID(uuid.New())
	if _, err := c.Forward(context.Background(), agentID, sid, request(t, sid)); !errors.Is(err, tunnel.ErrNotConnected) {
		t.Fatal(err)
	}
	until(t, 5*time.Second, "a second connection after the idle close", func() bool { return side.conns.Load() == 2 })
}

// A refusal moves on to the next replica holding the agent; the reasons
// of all are kept, and the session limit is the error only when every
// replica was at it.
func TestClientTriesTheNextReplica(t *testing.T) {
	_, a, b := pair(t)
	c2, err := NewIdentity(a.ca, uuid.NewString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gone := serveReplica(t, a, refuser{tunnel.ErrNotConnected})
	busy := serveReplica(t, c2, refuser{tunnel.ErrSessionLimit})
	dir := &directory{replicas: []cluster.Gateway{at(a, "gw-a", gone.addr), at(c2, "gw-c", busy.addr)}}
	c := newClient(t, b, dir, time.Minute)
	sid := dataplane.SessionID(uuid.New())
	_, err = c.Forward(context.Background(), uuid.NewString(), sid, request(t, sid))
	if !errors.Is(err, tunnel.ErrNotConnected) || !strings.Contains(err.Error(), "gw-a") || !strings.Contains(err.Error(), "at replica gw-c") ||
		!strings.Contains(err.Error(), "busy, busy") {
		t.Errorf("Forward: %v, want not connected, with both replicas' reasons", err)
	}
	if gone.conns.Load() != 1 || busy.conns.Load() != 1 {
		t.Errorf("connections: %d to gw-a, %d to gw-c; want one each", gone.conns.Load(), busy.conns.Load())
	}

	dir2 := &directory{replicas: []cluster.Gateway{at(c2, "gw-c", busy.addr)}}
	c3 := newClient(t, b, dir2, time.Minute)
	if _, err := c3.Forward(context.Background(), uuid.NewString(), sid, request(t, sid)); !errors.Is(err, tunnel.ErrSessionLimit) {
		t.Errorf("Forward with every replica at the limit: %v, want ErrSessionLimit", err)
	}
	// Close ends the link on both ends (goleak checks the rest).
	if err := c3.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	until(t, 5*time.Second, "gw-c's end of the link closed", func() bool { return busy.live.Load() == 1 })
	if _, err := c3.Forward(context.Background(), uuid.NewString(), sid, request(t, sid)); !errors.Is(err, tunnel.ErrNotConnected) {
		t.Errorf("Forward after Close: %v", err)
	}
}

// The dialing side checks that it reached the replica it meant: another
// replica's valid peer certificate is refused, and so is a stranger's.
func TestClientVerifiesTheReplica(t *testing.T) {
	_, a, b := pair(t)
	side := serveReplica(t, a, refuser{tunnel.ErrNotConnected})
	other := uuid.NewString()
	dir := &directory{replicas: []cluster.Gateway{{Replica: store.Replica{ID: other, Name: "gw-x", PeerEndpoint: side.addr}, State: cluster.Serving}}}
	c := newClient(t, b, dir, time.Minute)
	sid := dataplane.SessionID(uuid.New())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Forward(ctx, uuid.NewString(), sid, request(t, sid))
	if !errors.Is(err, tunnel.ErrNotConnected) || !strings.Contains(err.Error(), "wanted "+other) {
		t.Errorf("Forward to a replica presenting another id: %v", err)
	}

	_, stranger, _ := pair(t) // a peer of another cluster's CA
	side2 := serveReplica(t, stranger, refuser{tunnel.ErrNotConnected})
	dir2 := &directory{replicas: []cluster.Gateway{at(stranger, "gw-s", side2.addr)}}
	c2 := newClient(t, b, dir2, time.Minute)
	if _, err := c2.Forward(ctx, uuid.NewString(), sid, request(t, sid)); !errors.Is(err, tunnel.ErrNotConnected) || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("Forward to another CA's replica: %v", err)
	}
	if side2.conns.Load() != 0 {
		t.Error("the stranger's listener accepted a connection from this cluster's peer")
	}
}

// No replica holds the agent: ErrNotConnected without a dial; the location
// is cached for LocateTTL.
func TestClientAgentNowhere(t *testing.T) {
	_, _, b := pair(t)
	dir := &directory{replicas: []cluster.Gateway{at(b, "self", "127.0.0.1:9")}}
	c := newClient(t, b, dir, time.Minute)
	for range 3 {
		sid := dataplane.SessionID(uuid.New())
		if _, err := c.Forward(context.Background(), uuid.NewString(), sid, request(t, sid)); !errors.Is(err, tunnel.ErrNotConnected) {
			t.Errorf("an agent held only by this replica: %v", err)
		}
	}
	agentID := uuid.NewString()
	for range 3 {
		c.Forward(context.Background(), agentID, dataplane.SessionID{}, nil)
	}
	if got := dir.lookups.Load(); got != 4 {
		t.Errorf("%d lookups for 4 agents, want one each (cached)", got)
	}
	if c.Links() != 0 {
		t.Error("a link to this replica itself")
	}
}

// A draining replica is tried after the serving ones.
func TestClientPrefersServingReplicas(t *testing.T) {
	_, a, b := pair(t)
	c2, err := NewIdentity(a.ca, uuid.NewString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	draining := at(a, "gw-a", serveReplica(t, a, refuser{tunnel.ErrNotConnected}).addr)
	draining.State = cluster.Draining
	dir := &directory{replicas: []cluster.Gateway{draining, at(c2, "gw-c", serveReplica(t, c2, refuser{tunnel.ErrNotConnected}).addr)}}
	c := newClient(t, b, dir, time.Minute)
	sid := dataplane.SessionID(uuid.New())
	_, err = c.Forward(context.Background(), uuid.NewString(), sid, request(t, sid))
	if msg := fmt.Sprint(err); strings.Index(msg, "gw-c") > strings.Index(msg, "gw-a") || !strings.Contains(msg, "gw-a") {
		t.Errorf("Forward: %v, want gw-c tried before the draining gw-a", err)
	}
}

// An agent whose connection to the replica went quiet is refused there
// as unavailable, with the replica's words.
func TestClientUnresponsiveAgent(t *testing.T) {
	_, a, b := pair(t)
	dir := &directory{replicas: []cluster.Gateway{at(a, "gw-a", serveReplica(t, a, refuser{tunnel.ErrUnresponsive}).addr)}}
	c := newClient(t, b, dir, time.Minute)
	sid := dataplane.SessionID(uuid.New())
	_, err := c.Forward(context.Background(), uuid.NewString(), sid, request(t, sid))
	if !errors.Is(err, tunnel.ErrNotConnected) || !strings.Contains(err.Error(), "(unavailable): agent is unresponsive: busy, busy") {
		t.Errorf("Forward: %v", err)
	}
}

// silent is a LocalOpener that never answers: the replica behind it is as
// good as dead (kill -9 leaves the link up until its idle timeout).
type silent struct{ calls atomic.Int32 }

func (s *silent) RequestLocal(ctx context.Context, _ string, _ dataplane.SessionID, _ string) (*tunnel.Pending, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// A replica that does not answer within StatusTimeout, with another
// replica holding the agent left to try, costs a session that wait, not
// the link's idle timeout; later sessions try it last, and with that wait
// even then.
func TestClientMovesOnFromASilentReplica(t *testing.T) {
	_, a, b := pair(t)
	c2, err := NewIdentity(a.ca, uuid.NewString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mute := &silent{}
	dead := serveReplica(t, a, mute)
	live := serveReplica(t, c2, refuser{tunnel.ErrNotConnected})
	dir := &directory{replicas: []cluster.Gateway{at(a, "gw-a", dead.addr), at(c2, "gw-c", live.addr)}}
	c := newClient(t, b, dir, time.Minute)
	c.cfg.StatusTimeout = 200 * time.Millisecond
	for i := range 2 {
		sid := dataplane.SessionID(uuid.New())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err := c.Forward(ctx, uuid.NewString(), sid, request(t, sid))
		took := time.Since(start)
		cancel()
		if !errors.Is(err, tunnel.ErrNotConnected) || !strings.Contains(err.Error(), "gw-c") {
			t.Fatalf("session %d: %v, want gw-c's answer", i, err)
		}
		if took > 5*time.Second {
			t.Errorf("session %d took %v", i, took)
		}
		// The reasons are in the order tried: gw-a first, then last.
		if aFirst := strings.Index(err.Error(), "gw-a") < strings.Index(err.Error(), "gw-c"); aFirst != (i == 0) {
			t.Errorf("session %d tried the replicas in the wrong order: %v", i, err)
		}
	}
	if n := mute.calls.Load(); n != 2 {
		t.Errorf("the silent replica was asked %d times, want 2 (each time with the wait)", n)
	}
}
