package store

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// Replicas register, heartbeat, list with their agent counts and are swept
// with their connections once their heartbeat is old; a swept replica's
// heartbeat is ErrNotFound.
func testReplicas(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	t0 := f.clk.Now()
	a := Replica{ID: "r-a", Name: "gw-a", QUICEndpoint: "gw-a:4433", APIEndpoint: "gw-a:7171", State: ReplicaServing, StartedAt: t0, HeartbeatAt: t0}
	b := Replica{ID: "r-b", Name: "gw-b", QUICEndpoint: "gw-b:4433", APIEndpoint: "gw-b:7171", State: ReplicaServing, StartedAt: t0.Add(time.Second)}
	for _, r := range []Replica{a, b} {
		if err := s.RegisterReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RegisterReplica(ctx, Replica{ID: "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a replica without a state: %v, want ErrInvalid", err)
	}
	for _, c := range []AgentConnection{
		{AgentID: "ag-1", ReplicaID: "r-a", Generation: 1},
		{AgentID: "ag-2", ReplicaID: "r-a", Generation: 2},
		{AgentID: "ag-1", ReplicaID: "r-b", Generation: 7},
	} {
		if err := s.UpdateAgentConnections(ctx, c.ReplicaID, []ConnectionChange{{AgentConnection: c}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateAgentConnections(ctx, "r-none", []ConnectionChange{{AgentConnection: AgentConnection{AgentID: "ag-1", ReplicaID: "r-none", Generation: 1}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a connection of an unregistered replica: %v, want ErrNotFound", err)
	}

	f.clk.Advance(10 * time.Second)
	if err := s.HeartbeatReplica(ctx, "r-b", ReplicaDraining, f.clk.Now()); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListReplicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.HeartbeatAt, a.StartedAt, a.Agents = truncate(t0), truncate(t0), 2
	b.HeartbeatAt, b.StartedAt, b.State, b.Agents = truncate(f.clk.Now()), truncate(t0.Add(time.Second)), ReplicaDraining, 1
	if !reflect.DeepEqual(list, []Replica{a, b}) {
		t.Errorf("ListReplicas:\n%+v\nwant\n%+v", list, []Replica{a, b})
	}
	got, err := s.AgentReplicas(ctx, []string{"ag-1", "ag-2", "ag-3"}, t0)
	if want := map[string][]string{"ag-1": {"r-a", "r-b"}, "ag-2": {"r-a"}}; err != nil || !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("AgentReplicas = %v, %v; want %v", got, err, want)
	}
	got, err = s.AgentReplicas(ctx, []string{"ag-1", "ag-2"}, t0.Add(time.Second))
	if want := map[string][]string{"ag-1": {"r-b"}}; err != nil || !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("AgentReplicas heard from since t0+1s = %v, %v; want %v", got, err, want)
	}

	// r-b may not sweep itself; r-a's heartbeat is old: swept with its
	// connections.
	if swept, err := s.SweepReplicas(ctx, f.clk.Now().Add(time.Second), "r-b"); err != nil || !slices.Equal(swept, []string{"r-a"}) {
		t.Fatalf("SweepReplicas = %v, %v; want r-a", swept, err)
	}
	if err := s.HeartbeatReplica(ctx, "r-a", ReplicaServing, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("heartbeat of a swept replica: %v, want ErrNotFound", err)
	}
	got, err = s.AgentReplicas(ctx, []string{"ag-1", "ag-2"}, time.Time{})
	if want := map[string][]string{"ag-1": {"r-b"}}; err != nil || !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("AgentReplicas after the sweep = %v, %v; want %v", got, err, want)
	}
}

// A connection record follows the agent's latest connection to a replica:
// removing an older generation leaves it; UpdateAgentConnections applies
// its changes in order; SetAgentConnections replaces a replica's records
// whole.
func testAgentConnections(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	for _, id := range []string{"r-a", "r-b"} {
		if err := s.RegisterReplica(ctx, Replica{ID: id, State: ReplicaServing}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(id string) int {
		t.Helper()
		list, err := s.ListReplicas(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			if r.ID == id {
				return r.Agents
			}
		}
		t.Fatalf("replica %s not listed", id)
		return 0
	}
	update := func(replicaID string, changes ...ConnectionChange) {
		t.Helper()
		if err := s.UpdateAgentConnections(ctx, replicaID, changes); err != nil {
			t.Fatal(err)
		}
	}
	put := func(c AgentConnection) { t.Helper(); update(c.ReplicaID, ConnectionChange{AgentConnection: c}) }
	removed := func(agentID, replicaID string, gen uint64) ConnectionChange {
		return ConnectionChange{AgentConnection: AgentConnection{AgentID: agentID, ReplicaID: replicaID, Generation: gen}, Removed: true}
	}
	// In one call: a connection, its reconnect, the first one's end.
	update("r-a", ConnectionChange{AgentConnection: AgentConnection{AgentID: "ag-1", ReplicaID: "r-a", Generation: 1}},
		ConnectionChange{AgentConnection: AgentConnection{AgentID: "ag-1", ReplicaID: "r-a", Generation: 2}},
		removed("ag-1", "r-a", 1))
	if n := count("r-a"); n != 1 {
		t.Errorf("after removing the superseded generation: %d connections, want 1", n)
	}
	update("r-a", removed("ag-1", "r-a", 2), removed("ag-7", "r-a", 1))
	if n := count("r-a"); n != 0 {
		t.Errorf("after removing the live generation: %d connections, want 0", n)
	}
	if err := s.UpdateAgentConnections(ctx, "r-a", []ConnectionChange{removed("ag-1", "r-b", 1)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a change of another replica: %v, want ErrInvalid", err)
	}

	put(AgentConnection{AgentID: "ag-9", ReplicaID: "r-a", Generation: 3})
	put(AgentConnection{AgentID: "ag-9", ReplicaID: "r-b", Generation: 1})
	if err := s.SetAgentConnections(ctx, "r-a", []AgentConnection{
		{AgentID: "ag-1", ReplicaID: "r-a", Generation: 5}, {AgentID: "ag-2", ReplicaID: "r-a", Generation: 6}}); err != nil {
		t.Fatal(err)
	}
	if n := count("r-a"); n != 2 {
		t.Errorf("after SetAgentConnections: %d, want 2", n)
	}
	if n := count("r-b"); n != 1 {
		t.Errorf("another replica's records changed: %d, want 1", n)
	}
	if err := s.SetAgentConnections(ctx, "r-a", []AgentConnection{{AgentID: "ag-1", ReplicaID: "r-b"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("another replica's connection: %v, want ErrInvalid", err)
	}
	if err := s.SetAgentConnections(ctx, "r-a", nil); err != nil || count("r-a") != 0 {
		t.Errorf("SetAgentConnections(nil): %v, %d left", err, count("r-a"))
	}
}
