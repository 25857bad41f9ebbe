package agentadmin

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// memStore is an in-memory Store: agents ordered by id.
type memStore struct{ agents []store.Agent }

func (m *memStore) GetAgent(_ context.Context, id string) (store.Agent, error) {
	for _, a := range m.agents {
		if a.ID == id {
			return a, nil
		}
	}
	return store.Agent{}, store.ErrNotFound
}

func (m *memStore) ListAgents(_ context.Context, opts store.ListAgentsOptions) ([]store.Agent, error) {
	var out []store.Agent
	for _, a := range m.agents {
		if a.ID > opts.AfterID && len(out) < opts.Limit {
			out = append(out, a)
		}
	}
	return out, nil
}

func (m *memStore) DeleteAgent(context.Context, string) error { return nil }

func (m *memStore) ListSessions(context.Context, store.ListSessionsOptions) ([]store.SessionRecord, error) {
	return nil, nil
}

// memLive reports the agents in online as online, every other as offline.
type memLive struct{ online map[string]bool }

func (l memLive) Get(id string) (registry.Snapshot, bool) {
	if !l.online[id] {
		return registry.Snapshot{}, false
	}
	return registry.Snapshot{AgentID: id, Status: registry.Online}, true
}
func (l memLive) LastSeen(string) (time.Time, bool) { return time.Time{}, false }
func (l memLive) Forget(string)                     {}
func (l memLive) Reapprove(string) bool             { return false }

// noApprovals is an Approvals that holds nothing.
type noApprovals struct{}

func (noApprovals) SetApproved(context.Context, string, approval.Set) error { return store.ErrNotFound }
func (noApprovals) Forget(string)                                           {}

// Paging returns every matching agent exactly once, in id order, whatever the
// filter, the page size and where the page ends relative to the store's
// batches — including a page that fills on the first row of a new batch, which
// once made ListAgents index batch[-1] and crash the gateway.
func TestListAgentsPagingMatrix(t *testing.T) {
	const n = 12
	patterns := map[string]func(i int) bool{
		"all online":            func(int) bool { return true },
		"none online":           func(int) bool { return false },
		"first offline":         func(i int) bool { return i != 0 },
		"alternate":             func(i int) bool { return i%2 == 1 },
		"only last":             func(i int) bool { return i == n-1 },
		"first two offline":     func(i int) bool { return i > 1 },
		"offline run in middle": func(i int) bool { return i < 3 || i > 8 },
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(i)}).String()
	}
	slices.Sort(ids)
	filters := []outpostv1.AgentStatus{
		outpostv1.AgentStatus_AGENT_STATUS_UNSPECIFIED,
		outpostv1.AgentStatus_AGENT_STATUS_ONLINE,
		outpostv1.AgentStatus_AGENT_STATUS_OFFLINE,
		outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE,
	}
	for name, online := range patterns {
		ms := &memStore{}
		live := memLive{online: map[string]bool{}}
		for i, id := range ids {
			ms.agents = append(ms.agents, store.Agent{ID: id, Name: fmt.Sprintf("a%02d", i)})
			live.online[id] = online(i)
		}
		svc, err := New(Config{Store: ms, Live: live, Disconnect: func(string, string) bool { return false }, Approvals: noApprovals{}})
		if err != nil {
			t.Fatal(err)
		}
		for _, filter := range filters {
			var want []string
			for i, id := range ids {
				switch filter {
				case outpostv1.AgentStatus_AGENT_STATUS_UNSPECIFIED:
					want = append(want, id)
				case outpostv1.AgentStatus_AGENT_STATUS_ONLINE:
					if online(i) {
						want = append(want, id)
					}
				case outpostv1.AgentStatus_AGENT_STATUS_OFFLINE:
					if !online(i) {
						want = append(want, id)
					}
				}
			}
			for size := 1; size <= n+1; size++ {
				t.Run(fmt.Sprintf("%s/%s/size%d", name, filter, size), func(t *testing.T) {
					var got []string
					tok := ""
					for pages := 0; ; pages++ {
						if pages > n+2 {
							t.Fatalf("paging does not end: %v", got)
						}
						resp, err := svc.ListAgents(context.Background(), &outpostv1.ListAgentsRequest{
							PageSize: int32(size), PageToken: tok, Status: filter})
						if err != nil {
							t.Fatal(err)
						}
						if len(resp.GetAgents()) > size {
							t.Fatalf("page of %d agents for page_size %d", len(resp.GetAgents()), size)
						}
						for _, a := range resp.GetAgents() {
							got = append(got, a.GetAgentId())
						}
						if tok = resp.GetNextPageToken(); tok == "" {
							break
						}
					}
					if !slices.Equal(got, want) {
						t.Fatalf("got %v\nwant %v", got, want)
					}
				})
			}
		}
	}
}
