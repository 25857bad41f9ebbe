package cluster

import (
	"context"
	"slices"
	"sync"
	"testing"

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
