package store

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// ListAgentPresence lists the live agents connected to serving replicas
// heard from since the cutoff, other than the one excluded, with their
// routes, their latest connection time and the replicas holding them.
func testAgentPresence(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	t0 := f.clk.Now()
	for _, r := range []Replica{
		{ID: "r-a", Name: "gw-a", State: ReplicaServing, HeartbeatAt: t0},
		{ID: "r-b", Name: "gw-b", State: ReplicaServing, HeartbeatAt: t0.Add(time.Minute)},
		{ID: "r-c", Name: "gw-c", State: ReplicaServing, HeartbeatAt: t0.Add(time.Minute)},
		{ID: "r-d", Name: "gw-d", State: ReplicaDraining, HeartbeatAt: t0.Add(time.Minute)},
	} {
		if err := s.RegisterReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	one := mustEnroll(t, s, enrollReq(f.clk, "j1", "one", "c1")).Agent
	two := mustEnroll(t, s, enrollReq(f.clk, "j2", "two", "c2")).Agent
	gone := mustEnroll(t, s, enrollReq(f.clk, "j3", "gone", "c3")).Agent
	last := RouteSet{Subnets: []string{"10.0.0.0/25"}, Domains: []string{}}
	if err := s.SetLastRoutes(ctx, one.ID, last); err != nil {
		t.Fatal(err)
	}
	conns := map[string][]AgentConnection{
		"r-a": {{AgentID: one.ID, Generation: 1, ConnectedAt: t0}, {AgentID: gone.ID, Generation: 1, ConnectedAt: t0}},
		"r-b": {{AgentID: one.ID, Generation: 3, ConnectedAt: t0.Add(2 * time.Second)}, {AgentID: two.ID, Generation: 1, ConnectedAt: t0}},
		"r-c": {{AgentID: one.ID, Generation: 1, ConnectedAt: t0.Add(time.Second)}, {AgentID: gone.ID, Generation: 2, ConnectedAt: t0}},
		"r-d": {{AgentID: two.ID, Generation: 1, ConnectedAt: t0.Add(time.Hour)}},
	}
	for r, cs := range conns {
		for i := range cs {
			cs[i].ReplicaID = r
		}
		if err := s.SetAgentConnections(ctx, r, cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteAgent(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}

	// Asked by r-c, with r-a gone: one on r-b only (r-c is the asker's),
	// two on r-b (r-d is draining); gone is deleted.
	got, err := s.ListAgentPresence(ctx, PresenceOptions{ExcludeReplica: "r-c", HeartbeatSince: t0.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	want := []AgentPresence{
		{AgentID: one.ID, Name: "one", ApprovedRoutes: one.ApprovedRoutes, LastRoutes: last,
			ConnectedAt: truncate(t0.Add(2 * time.Second)), Replicas: []PresenceReplica{{"r-b", "gw-b"}}},
		{AgentID: two.ID, Name: "two", ApprovedRoutes: two.ApprovedRoutes, LastRoutes: RouteSet{Subnets: []string{}, Domains: []string{}},
			ConnectedAt: truncate(t0), Replicas: []PresenceReplica{{"r-b", "gw-b"}}},
	}
	slices.SortFunc(want, func(a, b AgentPresence) int { return strings.Compare(a.AgentID, b.AgentID) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListAgentPresence:\n%+v\nwant\n%+v", got, want)
	}

	// Every replica heard from, none excluded, only agent one.
	got, err = s.ListAgentPresence(ctx, PresenceOptions{AgentIDs: []string{one.ID, "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	wantOne := AgentPresence{AgentID: one.ID, Name: "one", ApprovedRoutes: one.ApprovedRoutes, LastRoutes: last,
		ConnectedAt: truncate(t0.Add(2 * time.Second)), Replicas: []PresenceReplica{{"r-a", "gw-a"}, {"r-b", "gw-b"}, {"r-c", "gw-c"}}}
	if !reflect.DeepEqual(got, []AgentPresence{wantOne}) {
		t.Errorf("ListAgentPresence of one:\n%+v\nwant\n%+v", got, wantOne)
	}
	if got, err := s.ListAgentPresence(ctx, PresenceOptions{AgentIDs: []string{}}); err != nil || got == nil || len(got) != 0 {
		t.Errorf("ListAgentPresence of no agent = %v, %v; want empty", got, err)
	}
}

// waitPresence waits until the agent ids PresenceChanged heard since the
// last call are want (sorted, each once), then forgets them.
func (r *recordedEvents) waitPresence(t *testing.T, what string, want ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Compact(slices.Sorted(slices.Values(r.presence)))
		if slices.Equal(got, want) {
			r.presence = nil
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("%s: heard %v, want %v", what, got, want)
		}
	}
}

// Every change that alters ListAgentPresence's answer for an agent is
// announced with the agent's id: a connection recorded, replaced or
// removed, a replica's connections swept, the agent's routes set, its
// deletion. The listener reconnects after its backend is terminated.
func TestPostgresListenPresence(t *testing.T) {
	f := newFixture(t, postgresBackend)
	s, _ := f.open(t)
	ctx := ctxT(t)
	p := openPostgresT(t, f)
	ev := listenT(t, "ListenPresence", p.ListenPresence)

	if err := s.RegisterReplica(ctx, Replica{ID: "r-a", State: ReplicaServing}); err != nil {
		t.Fatal(err)
	}
	a := mustEnroll(t, s, enrollReq(f.clk, "j1", "a", "c1")).Agent
	b := mustEnroll(t, s, enrollReq(f.clk, "j2", "b", "c2")).Agent
	conn := func(id string, gen uint64) AgentConnection {
		return AgentConnection{AgentID: id, ReplicaID: "r-a", Generation: gen}
	}
	if err := s.SetAgentConnections(ctx, "r-a", []AgentConnection{conn(a.ID, 1), conn(b.ID, 1)}); err != nil {
		t.Fatal(err)
	}
	ev.waitPresence(t, "connections set", sortedIDs(a.ID, b.ID)...)
	if err := s.UpdateAgentConnections(ctx, "r-a", []ConnectionChange{{AgentConnection: conn(a.ID, 1), Removed: true}}); err != nil {
		t.Fatal(err)
	}
	ev.waitPresence(t, "a's connection removed", a.ID)
	if err := s.SetLastRoutes(ctx, b.ID, RouteSet{Subnets: []string{"10.0.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	ev.waitPresence(t, "b's last routes", b.ID)
	if err := s.SetApprovedRoutes(ctx, a.ID, RouteSet{Subnets: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	ev.waitPresence(t, "a's approved routes", a.ID)

	var n int
	if err := f.raw(t).QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1`, presenceAppName).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminating the listener's backend: %d, %v", n, err)
	}
	ev.waitFor(t, "a resync after the reconnect", func(n int, _ []string) bool { return n == 2 })
	if swept, err := s.SweepReplicas(ctx, f.clk.Now().Add(time.Hour), ""); err != nil || !slices.Equal(swept, []string{"r-a"}) {
		t.Fatalf("SweepReplicas = %v, %v", swept, err)
	}
	ev.waitPresence(t, "r-a swept", b.ID)
	if err := s.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	ev.waitPresence(t, "a deleted", a.ID)
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}
