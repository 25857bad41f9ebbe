package cluster

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testpg.StopAfter(m)) }

// fakeListener hands its events to the test through a channel.
type fakeListener struct{ events chan store.AgentEvents }

func (f *fakeListener) ListenAgents(ctx context.Context, ev store.AgentEvents, _ store.ListenConfig) error {
	f.events <- ev
	<-ctx.Done()
	return nil
}

// goneStore says that the ids in gone are gone.
type goneStore struct{ gone []string }

func (g goneStore) GoneAgents(_ context.Context, ids []string) ([]string, error) {
	var out []string
	for _, id := range ids {
		if slices.Contains(g.gone, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// A notified deletion is applied; a resync applies the deletions among the
// held agents that the store reports, and only those.
func TestRunDeletions(t *testing.T) {
	l := &fakeListener{events: make(chan store.AgentEvents)}
	var mu sync.Mutex
	var deleted []string
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- RunDeletions(ctx, DeletionsConfig{
			Listener: l,
			Store:    goneStore{gone: []string{"b", "z"}},
			Held:     func() []string { return []string{"a", "b", "c"} },
			Deleted: func(id string) {
				mu.Lock()
				defer mu.Unlock()
				deleted = append(deleted, id)
			},
			Logger: testlog.Logger(t, "cluster"),
		})
	}()
	ev := <-l.events
	ev.AgentDeleted("x")
	ev.Resync(ctx)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(deleted, []string{"x", "b"}) {
		t.Errorf("deleted %v, want x (notified) and b (held and gone)", deleted)
	}
}

// listenerPIDs returns the backend pids of the deletion listeners on the
// database.
func listenerPIDs(t *testing.T, db *sql.DB) []int { return backendPIDs(t, db, "outpost-listener") }

// backendPIDs returns the pids of the database's backends whose
// application_name is app.
func backendPIDs(t *testing.T, db *sql.DB, app string) []int {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 ORDER BY pid`, app)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// until polls cond every 10 ms, failing the test after 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An agent deleted while the listener's connection is down (terminated by
// the server) is noticed when the listener reconnects: the resync finds it
// deleted among the held agents.
func TestDeletionsHealAfterReconnect(t *testing.T) {
	dsn := testpg.DSN(t)
	listening, err := store.OpenPostgres(t.Context(), dsn, store.Config{Logger: testlog.Logger(t, "store")})
	if err != nil {
		t.Fatal(err)
	}
	defer listening.Close()
	deleting, err := store.OpenPostgres(t.Context(), dsn, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer deleting.Close()
	id := uuid.NewString()
	if _, err := deleting.EnrollAgent(t.Context(), store.EnrollRequest{JTI: "j", TokenExpiresAt: time.Now().Add(time.Hour),
		CSRSHA256: "c", CertPEM: []byte("cert"), Agent: store.Agent{ID: id, Name: "office", SPKISHA256: "s"}}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	deleted := make(chan string, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- RunDeletions(ctx, DeletionsConfig{
			Listener: listening, Store: listening,
			Held:              func() []string { return []string{id} },
			Deleted:           func(id string) { deleted <- id },
			ReconcileInterval: time.Hour,
			// A reconnect long after the termination: the deletion is
			// surely made while nobody listens.
			Listen: store.ListenConfig{BackoffMin: 4 * time.Second, BackoffMax: 4 * time.Second},
			Logger: testlog.Logger(t, "cluster"),
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var first []int
	until(t, "the listener", func() bool { first = listenerPIDs(t, raw); return len(first) == 1 })
	if _, err := raw.ExecContext(t.Context(), `SELECT pg_terminate_backend($1)`, first[0]); err != nil {
		t.Fatal(err)
	}
	until(t, "the listener's backend to end", func() bool { return len(listenerPIDs(t, raw)) == 0 })
	if err := deleting.DeleteAgent(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-deleted:
		t.Fatalf("deletion of %s heard with nobody listening", got)
	default:
	}
	select {
	case got := <-deleted:
		if got != id {
			t.Fatalf("deleted %s, want %s", got, id)
		}
		if pids := listenerPIDs(t, raw); len(pids) != 1 || pids[0] == first[0] {
			t.Errorf("listeners after the reconnect: %v (first %d)", pids, first[0])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the deletion made while the listener was down was never applied")
	}
}
