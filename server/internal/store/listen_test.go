package store

import (
	"context"
	"sync"
	"testing"
	"time"
)

// recordedEvents is an AgentEvents and a PresenceEvents that records what
// it is told.
type recordedEvents struct {
	mu       sync.Mutex
	resyncs  int
	deleted  []string
	presence []string      // PresenceChanged ids since the last waitPresence
	changed  chan struct{} // signalled after every event
}

func newRecordedEvents() *recordedEvents {
	return &recordedEvents{changed: make(chan struct{}, 1000)}
}

func (r *recordedEvents) PresenceChanged(id string) {
	r.mu.Lock()
	r.presence = append(r.presence, id)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recordedEvents) Resync(context.Context) {
	r.mu.Lock()
	r.resyncs++
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recordedEvents) AgentDeleted(id string) {
	r.mu.Lock()
	r.deleted = append(r.deleted, id)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

// waitFor waits until cond holds of the recorded events.
func (r *recordedEvents) waitFor(t *testing.T, what string, cond func(resyncs int, deleted []string) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.resyncs, r.deleted)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A deletion through one process reaches the listener of another; a
// rolled-back one does not. When the server ends the listener's
// connection, the listener reconnects, resyncs and hears the next one.
func TestPostgresListenAgents(t *testing.T) {
	f := newFixture(t, postgresBackend)
	deleting, _ := f.open(t)
	ctx := ctxT(t)
	p := openPostgresT(t, f)
	ev := listenT(t, "ListenAgents", p.ListenAgents)

	a := mustEnroll(t, deleting, enrollReq(f.clk, "j1", "a", "c1")).Agent
	b := mustEnroll(t, deleting, enrollReq(f.clk, "j2", "b", "c2")).Agent
	if err := deleting.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the deletion of a", func(_ int, d []string) bool { return len(d) == 1 && d[0] == a.ID })

	var n int
	if err := f.raw(t).QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminating the listener's backend: %d, %v", n, err)
	}
	ev.waitFor(t, "a resync after the reconnect", func(n int, _ []string) bool { return n == 2 })
	if err := deleting.DeleteAgent(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "the deletion of b", func(_ int, d []string) bool { return len(d) == 2 && d[1] == b.ID })
}

// openPostgresT opens a second handle on f's PostgreSQL database, closed
// at cleanup.
func openPostgresT(t *testing.T, f *fixture) *Postgres {
	t.Helper()
	p, err := OpenPostgres(ctxT(t), f.where, Config{Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// listenT runs listen (a Postgres listener method, named name) until the
// test ends, with short reconnect delays, and returns its events once the
// first resync arrived.
func listenT[E any](t *testing.T, name string, listen func(context.Context, E, ListenConfig) error) *recordedEvents {
	t.Helper()
	ev := newRecordedEvents()
	ctx, stop := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		done <- listen(ctx, any(ev).(E), ListenConfig{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	ev.waitFor(t, "the first resync", func(n int, _ []string) bool { return n == 1 })
	return ev
}
