package broker

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// silentTunnel fails every request as an agent that did not answer.
type silentTunnel struct{}

func (silentTunnel) Request(context.Context, string, dataplane.SessionID, string) (*tunnel.Pending, error) {
	return nil, fmt.Errorf("agent: %w", tunnel.ErrConnectTimeout)
}

type noAudit struct{}

func (noAudit) Record(store.SessionRecord) {}

// An agent connected to other replicas is decided on like a local one,
// its replicas named in the reason; one that did not answer is demoted
// behind the others.
func TestRemoteCandidates(t *testing.T) {
	reg := registry.New(nil)
	router := routing.New(reg)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	routes := registry.Routes{Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}
	router.SetRemote(routing.Remote{AgentID: "new", Name: "jump-new", ConnectedAt: base.Add(time.Second), Routes: routes,
		Replicas: []routing.Replica{{ID: "r-b", Name: "gw-b"}, {ID: "r-c"}}})
	router.SetRemote(routing.Remote{AgentID: "old", Name: "jump-old", ConnectedAt: base, Routes: routes,
		Replicas: []routing.Replica{{ID: "r-b", Name: "gw-b"}}})
	b, err := New(Config{Registry: reg, Router: router, Tunnel: silentTunnel{}, Audit: noAudit{}, HedgeDelay: -1,
		Logger: testlog.Logger(t, "broker")})
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.Decide("10.0.0.1:22", "")
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.1 matches 10.0.0.0/24 advertised by agent jump-new (connected to replicas gw-b, r-c) (1 more agent(s) as fallback)"
	if d.Kind != outpostv1.Decision_DECISION_AGENT || len(d.Candidates) != 2 || d.Reason != want {
		t.Fatalf("Decide = %v %q %+v, want AGENT %q", d.Kind, d.Reason, d.Candidates, want)
	}
	if _, _, err := b.openAgents(t.Context(), d.Candidates[:1], dataplane.SessionID{}, "10.0.0.1:22", nil, b.log); err == nil {
		t.Fatal("openAgents through a silent agent succeeded")
	}
	if c := router.Lookup(nil, "10.0.0.1"); len(c) != 2 || c[0].AgentID != "old" || c[1].AgentID != "new" {
		t.Errorf("after the remote agent timed out: %+v, want old first, new demoted", c)
	}
}
