package cluster

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
)

// enroll stores a live agent named name with approved routes, and its last
// advertised routes.
func enroll(t *testing.T, st store.Store, name string, approved, last []string) string {
	t.Helper()
	id := uuid.NewString()
	if _, err := st.EnrollAgent(t.Context(), store.EnrollRequest{JTI: "jti-" + name, TokenExpiresAt: time.Now().Add(time.Hour),
		CSRSHA256: "csr-" + name, CertPEM: []byte("cert"),
		Agent: store.Agent{ID: id, Name: name, SPKISHA256: "spki-" + name, ApprovedRoutes: store.RouteSet{Subnets: approved}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetLastRoutes(t.Context(), id, store.RouteSet{Subnets: last}); err != nil {
		t.Fatal(err)
	}
	return id
}

// presenceOf runs a Presence for replica r, feeding a router of r's
// registry, until the test ends.
func presenceOf(t *testing.T, r *replica, cfg PresenceConfig) (*Presence, *routing.Router) {
	t.Helper()
	router := routing.New(r.reg)
	cfg.Store, cfg.Listener, cfg.Sink, cfg.ReplicaID = r.st, r.st, router, r.m.ID()
	cfg.GoneAfter = testGoneAfter
	cfg.Logger = testlog.Logger(t, "presence-"+r.m.ID())
	p, err := NewPresence(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Presence.Run: %v", err)
		}
	})
	return p, router
}

// within polls cond every 10 ms, failing the test if it does not hold
// within d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// presentOn reports whether p sees agent id connected to exactly the
// replicas named.
func presentOn(p *Presence, id string, replicas ...string) bool {
	r, ok := p.Get(id)
	if !ok {
		return len(replicas) == 0
	}
	var got []string
	for _, rep := range r.Replicas {
		got = append(got, rep.ID)
	}
	return slices.Equal(got, replicas)
}

// Two replicas on one database: an agent connected to the first shows up
// in the second's presence, and as a remote candidate of its router,
// within a second, by notification alone (the reconcile interval is an
// hour); its routes are its last advertised ones inside its approved set
// and follow their changes; an agent connected to the second replica too is
// its local candidate; a disconnected agent and a deleted one disappear.
func TestPresenceFollowsNotifications(t *testing.T) {
	dsn := testpg.DSN(t)
	r1, r2 := startReplica(t, dsn, 1), startReplica(t, dsn, 2)
	a := enroll(t, r1.st, "a", []string{"10.1.0.0/16"}, []string{"10.1.2.0/24", "10.9.0.0/24"})
	b := enroll(t, r1.st, "b", []string{"10.2.0.0/16"}, []string{"10.2.0.0/24"})
	p2, router2 := presenceOf(t, r2, PresenceConfig{ReconcileInterval: time.Hour})
	p1, _ := presenceOf(t, r1, PresenceConfig{ReconcileInterval: time.Hour})
	waitListeners(t, dsn, 2)

	ea := r1.connect(a)
	within(t, time.Second, "a on replica-1 in replica-2's presence", func() bool { return presentOn(p2, a, "replica-1") })
	got, _ := p2.Get(a)
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}; got.Name != "a" || !slices.Equal(got.Routes.Subnets, want) || got.ConnectedAt.IsZero() {
		t.Errorf("presence of a = %+v, want name a, subnets %v (10.9.0.0/24 is not approved)", got, want)
	}
	cands := router2.Lookup(nil, "10.1.2.3")
	if len(cands) != 1 || cands[0].AgentID != a || cands[0].Entry != nil || len(cands[0].Replicas) != 1 || cands[0].Replicas[0].Name != "gw-1" {
		t.Errorf("replica-2's candidates for 10.1.2.3 = %+v, want a, remote on gw-1", cands)
	}
	if presentOn(p1, a, "replica-1") {
		t.Error("replica-1 sees its own connection as remote")
	}

	// New last routes, then a new approval, are followed.
	if err := r1.st.SetLastRoutes(t.Context(), a, store.RouteSet{Subnets: []string{"10.1.3.0/24"}}); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "a's new routes", func() bool { return len(router2.Lookup(nil, "10.1.3.3")) == 1 })
	if err := r1.st.SetApprovedRoutes(t.Context(), a, store.RouteSet{Subnets: []string{"10.1.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "a's new approval", func() bool { return len(router2.Lookup(nil, "10.1.3.3")) == 0 })

	// Connected to both: replica-2's router has it once, local.
	e2 := r2.connect(a)
	within(t, time.Second, "a on both", func() bool { return presentOn(p1, a, "replica-2") })
	if err := r1.st.SetApprovedRoutes(t.Context(), a, store.RouteSet{Subnets: []string{"10.1.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	r2.reg.Advertise(e2, 1, []netip.Prefix{netip.MustParsePrefix("10.1.3.0/24")}, nil)
	if c := router2.Lookup(nil, "10.1.3.3"); len(c) != 1 || c[0].Entry != e2 {
		t.Errorf("a connected to both: replica-2's candidates %+v, want its local entry only", c)
	}
	r2.reg.Unregister(e2)

	eb := r1.connect(b)
	within(t, time.Second, "b on replica-1", func() bool { return presentOn(p2, b, "replica-1") })
	r1.reg.Unregister(ea)
	within(t, time.Second, "a gone once disconnected", func() bool { return presentOn(p2, a) })
	if c := router2.Lookup(nil, "10.1.3.3"); len(c) != 0 {
		t.Errorf("a disconnected: candidates %+v", c)
	}
	if err := r1.st.DeleteAgent(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "b gone once deleted", func() bool { return presentOn(p2, b) })
	r1.reg.Unregister(eb)
}

// waitListeners waits until n presence listeners listen on the database.
func waitListeners(t *testing.T, dsn string, n int) {
	t.Helper()
	raw := rawDB(t, dsn)
	within(t, 10*time.Second, fmt.Sprintf("%d presence listeners", n), func() bool { return len(presencePIDs(t, raw)) == n })
}

func rawDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// presencePIDs returns the backend pids of the presence listeners.
func presencePIDs(t *testing.T, db *sql.DB) []int { return backendPIDs(t, db, "outpost-presence") }

// A change whose notification is lost (the listener's backend terminated,
// and no reconnect for an hour) is picked up by the periodic reconcile;
// the agents a gone replica held (it stopped heartbeating, its rows left
// behind, as after kill -9) disappear within the reconcile interval of its
// being gone.
func TestPresenceReconciles(t *testing.T) {
	dsn := testpg.DSN(t)
	r1, r2 := startReplica(t, dsn, 1), startReplica(t, dsn, 2)
	a := enroll(t, r1.st, "a", []string{"10.1.0.0/16"}, []string{"10.1.2.0/24"})
	const interval = 500 * time.Millisecond
	p2, router2 := presenceOf(t, r2, PresenceConfig{ReconcileInterval: interval,
		Listen: store.ListenConfig{BackoffMin: time.Hour, BackoffMax: time.Hour}})
	raw := rawDB(t, dsn)
	var pids []int
	within(t, 10*time.Second, "the presence listener", func() bool { pids = presencePIDs(t, raw); return len(pids) == 1 })
	if _, err := raw.ExecContext(t.Context(), `SELECT pg_terminate_backend($1)`, pids[0]); err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "the listener's backend to end", func() bool { return len(presencePIDs(t, raw)) == 0 })

	r1.connect(a)
	within(t, 2*interval+time.Second, "a, its notification lost, by the reconcile", func() bool { return presentOn(p2, a, "replica-1") })
	if c := router2.Lookup(nil, "10.1.2.3"); len(c) != 1 || c[0].AgentID != a {
		t.Errorf("candidates for 10.1.2.3 = %+v, want a", c)
	}

	// replica-1 dies: no heartbeat, no goodbye (its store is closed first).
	r1.st.Close()
	r1.stop()
	within(t, testGoneAfter+2*interval+2*time.Second, "a gone with its replica", func() bool { return presentOn(p2, a) })
	if c := router2.Lookup(nil, "10.1.2.3"); len(c) != 0 {
		t.Errorf("candidates for 10.1.2.3 after replica-1 is gone = %+v", c)
	}
}
