package agentadmin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
)

// memRemote is a Remote holding the given agents.
type memRemote map[string]routing.Remote

func (m memRemote) Get(id string) (routing.Remote, bool) { r, ok := m[id]; return r, ok }

// An agent connected only to another replica is online, with the routes it
// serves there, in GetAgent and in ListAgents filtered by status; one
// connected nowhere stays offline.
func TestRemoteAgentOnline(t *testing.T) {
	remoteID, offlineID := uuid.NewString(), uuid.NewString()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ms := &memStore{agents: []store.Agent{{ID: remoteID, Name: "far"}, {ID: offlineID, Name: "gone"}}}
	slices.SortFunc(ms.agents, func(a, b store.Agent) int { return strings.Compare(a.ID, b.ID) })
	svc, err := New(Config{Store: ms, Live: memLive{}, Disconnect: func(string, string) bool { return false }, Approvals: noApprovals{},
		Remote: memRemote{remoteID: {AgentID: remoteID, Name: "far", ConnectedAt: at,
			Routes:   registry.Routes{Subnets: []netip.Prefix{netip.MustParsePrefix("10.7.0.0/16")}},
			Replicas: []routing.Replica{{ID: "r-b", Name: "gw-b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.GetAgent(t.Context(), &outpostv1.GetAgentRequest{AgentId: remoteID})
	if err != nil {
		t.Fatal(err)
	}
	if v := got.GetAgent(); v.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || !v.GetConnectedAt().AsTime().Equal(at) ||
		!slices.Equal(v.GetSubnets(), []string{"10.7.0.0/16"}) {
		t.Errorf("remote agent: %v, want online since %v serving 10.7.0.0/16", v, at)
	}
	list, err := svc.ListAgents(t.Context(), &outpostv1.ListAgentsRequest{Status: outpostv1.AgentStatus_AGENT_STATUS_ONLINE})
	if err != nil {
		t.Fatal(err)
	}
	if a := list.GetAgents(); len(a) != 1 || a[0].GetAgentId() != remoteID {
		t.Errorf("online agents: %v, want the remote one only", a)
	}
}
