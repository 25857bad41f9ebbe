package cluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// Short timings for the tests: a heartbeat every 100 ms, gone after 2 s (a
// loaded CI machine can delay a heartbeat by a second), swept 1 s later.
const (
	testHeartbeat  = 100 * time.Millisecond
	testGoneAfter  = 2 * time.Second
	testSweepGrace = time.Second
)

// replica is one member under test, with its own store handle (as a
// separate process would have) and registry.
type replica struct {
	st   *store.Postgres
	reg  *registry.Registry
	m    *Member
	stop func() // cancels Run and waits for it
}

func startReplica(t *testing.T, dsn string, i int) *replica {
	t.Helper()
	st, err := store.OpenPostgres(t.Context(), dsn, store.Config{Logger: testlog.Logger(t, "store")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &replica{st: st, reg: registry.New(nil)}
	r.m, err = NewMember(MemberConfig{
		Store:    st,
		Registry: r.reg,
		Replica: store.Replica{ID: fmt.Sprintf("replica-%d", i), Name: fmt.Sprintf("gw-%d", i),
			QUICEndpoint: fmt.Sprintf("gw-%d:4433", i), APIEndpoint: fmt.Sprintf("gw-%d:7171", i)},
		Heartbeat: testHeartbeat, GoneAfter: testGoneAfter, SweepGrace: testSweepGrace,
		Logger: testlog.Logger(t, fmt.Sprintf("cluster-%d", i)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

// nopConn is a registry.Conn that closes nothing.
type nopConn struct{}

func (nopConn) CloseWithReason(string) {}

// connect registers a connection of agentID in r's registry.
func (r *replica) connect(agentID string) *registry.Entry {
	e := &registry.Entry{AgentID: agentID, Name: agentID, Conn: nopConn{}}
	r.reg.Register(e)
	return e
}

// states returns the replicas r sees, by id: state and agent count.
func (r *replica) states(t *testing.T) map[string]string {
	t.Helper()
	gws, err := r.m.Gateways(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(gws))
	for _, g := range gws {
		out[g.ID] = fmt.Sprintf("%v/%d", g.State, g.Agents)
	}
	return out
}

// waitStates waits until r sees want.
func waitStates(t *testing.T, r *replica, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.states(t)
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Three replicas on one database register and record their agent
// connections; a replica that drains shows draining; one whose heartbeats
// stop (its store gone, as after kill -9) is gone after the timeout and
// swept with its connections after the grace; the others stay serving.
func TestMembers(t *testing.T) {
	dsn := testpg.DSN(t)
	r1, r2, r3 := startReplica(t, dsn, 1), startReplica(t, dsn, 2), startReplica(t, dsn, 3)
	waitStates(t, r1, map[string]string{"replica-1": "serving/0", "replica-2": "serving/0", "replica-3": "serving/0"})

	a := r1.connect("agent-a")
	r2.connect("agent-a")
	r3.connect("agent-a")
	r3.connect("agent-b")
	waitStates(t, r2, map[string]string{"replica-1": "serving/1", "replica-2": "serving/1", "replica-3": "serving/2"})
	got, err := r1.m.AgentReplicas(t.Context(), []string{"agent-a", "agent-b", "agent-c"})
	want := map[string][]string{"agent-a": {"replica-1", "replica-2", "replica-3"}, "agent-b": {"replica-3"}}
	if err != nil || !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("AgentReplicas = %v, %v; want %v", got, err, want)
	}

	// A reconnect replaces the record; a disconnect removes it.
	r1.connect("agent-a")
	r1.reg.Unregister(a) // the superseded connection: no change
	waitStates(t, r2, map[string]string{"replica-1": "serving/1", "replica-2": "serving/1", "replica-3": "serving/2"})
	e, _ := r1.reg.Lookup("agent-a")
	r1.reg.Unregister(e)
	waitStates(t, r2, map[string]string{"replica-1": "serving/0", "replica-2": "serving/1", "replica-3": "serving/2"})

	if err := r2.m.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitStates(t, r1, map[string]string{"replica-1": "serving/0", "replica-2": "draining/1", "replica-3": "serving/2"})

	// replica-3 dies: no more heartbeats, its rows stay until swept.
	r3.st.Close()
	r3.stop()
	waitStates(t, r1, map[string]string{"replica-1": "serving/0", "replica-2": "draining/1", "replica-3": "gone/2"})
	got, err = r1.m.AgentReplicas(t.Context(), []string{"agent-a", "agent-b"})
	want = map[string][]string{"agent-a": {"replica-2"}}
	if err != nil || !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("AgentReplicas with replica-3 gone = %v, %v; want %v", got, err, want)
	}
	waitStates(t, r1, map[string]string{"replica-1": "serving/0", "replica-2": "draining/1"})

	// replica-2 stops gracefully: its connections are cleared, it stays
	// draining until gone.
	r2.stop()
	waitStates(t, r1, map[string]string{"replica-1": "serving/0", "replica-2": "draining/0"})
}

// A replica whose registration was swept while it could not heartbeat
// (a long store outage) registers again and records its connections
// again at its next heartbeat.
func TestMemberRegistersAgain(t *testing.T) {
	dsn := testpg.DSN(t)
	r1 := startReplica(t, dsn, 1)
	r1.connect("agent-a")
	r1.connect("agent-b")
	waitStates(t, r1, map[string]string{"replica-1": "serving/2"})
	if _, err := r1.st.SweepReplicas(t.Context(), time.Now().Add(time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, r1, map[string]string{"replica-1": "serving/2"})
}

// A data directory keeps its replica id across restarts; another one has
// another id; a damaged file is refused, not replaced.
func TestLoadOrCreateID(t *testing.T) {
	dir := t.TempDir()
	id, err := LoadOrCreateID(dir)
	if err != nil || id == "" {
		t.Fatalf("first: %q, %v", id, err)
	}
	again, err := LoadOrCreateID(dir)
	if err != nil || again != id {
		t.Errorf("again: %q, %v; want %q", again, err, id)
	}
	if other, _ := LoadOrCreateID(t.TempDir()); other == id {
		t.Error("two data directories share a replica id")
	}
	if err := os.WriteFile(filepath.Join(dir, ReplicaIDFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateID(dir); err == nil {
		t.Error("a damaged replica.id was accepted")
	}
}
