package routing

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/registry"
)

// remote records agent id (named "name-"+id) as connected to the replicas
// given at base+at, serving routes (see connect).
func (v *env) remote(id string, at time.Duration, replicas []Replica, routes ...string) {
	v.t.Helper()
	subnets, domains := splitRoutes(v.t, routes)
	v.r.SetRemote(Remote{AgentID: id, Name: "name-" + id, ConnectedAt: base.Add(at), Replicas: replicas,
		Routes: registry.Routes{Subnets: subnets, Domains: domains}})
	checkIndex(v.t, v.r)
}

var (
	replicaB = []Replica{{ID: "r-b", Name: "gw-b"}}
	replicaC = []Replica{{ID: "r-c", Name: "gw-c"}}
)

// Remote agents match by the local rules, mixed with the local agents:
// longest prefix, domain specificity, most recently connected first.
func TestLookupRemote(t *testing.T) {
	v := newEnv(t)
	v.clk.Set(base.Add(2 * time.Second))
	v.connect("local", "10.0.0.0/16", "contoso.local")
	v.remote("far", 3*time.Second, replicaB, "10.0.0.0/16", "10.0.1.0/24", "*.contoso.local")
	v.remote("old", time.Second, replicaC, "10.0.0.0/16", "db.contoso.local")

	v.expect("10.0.0.9", "far=10.0.0.0/16", "local=10.0.0.0/16", "old=10.0.0.0/16")
	v.expect("10.0.1.9", "far=10.0.1.0/24")
	v.expect("contoso.local", "local=contoso.local")
	v.expect("x.contoso.local", "far=*.contoso.local", "local=contoso.local")
	v.expect("db.contoso.local", "old=db.contoso.local")
	v.expect("192.0.2.1")

	got := v.r.Lookup(nil, "10.0.1.9")
	want := []Candidate{{AgentID: "far", Name: "name-far", MatchedRoute: "10.0.1.0/24", ConnectedAt: base.Add(3 * time.Second), Replicas: replicaB}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("remote candidate = %+v, want %+v", got, want)
	}

	// New routes replace the old ones; removal withdraws them all.
	v.remote("far", 3*time.Second, replicaB, "10.0.2.0/24")
	v.expect("10.0.1.9", "local=10.0.0.0/16", "old=10.0.0.0/16")
	v.expect("10.0.2.1", "far=10.0.2.0/24")
	v.r.RemoveRemote("far")
	v.r.RemoveRemote("never")
	checkIndex(t, v.r)
	v.expect("10.0.2.1", "local=10.0.0.0/16", "old=10.0.0.0/16")
	v.expect("x.contoso.local", "local=contoso.local")
}

// An agent connected here is a local candidate only, whatever the
// presence says of it; when its local connection leaves, its remote
// record takes over, and when it connects here again the local one does.
func TestLocalSupersedesRemote(t *testing.T) {
	v := newEnv(t)
	v.clk.Set(base.Add(time.Second))
	e := v.connect("a", "10.0.0.0/24")
	v.remote("a", 5*time.Second, replicaB, "10.0.0.0/24", "10.9.0.0/24")
	v.expect("10.0.0.1", "a=10.0.0.0/24")
	v.expect("10.9.0.1") // the remote record's routes are not the local connection's
	if got := v.r.Lookup(nil, "10.0.0.1"); len(got) != 1 || got[0].Entry != e || got[0].Replicas != nil {
		t.Fatalf("local agent with a remote record: %+v, want its local entry only", got)
	}

	v.reg.Unregister(e)
	checkIndex(t, v.r)
	v.expect("10.9.0.1", "a=10.9.0.0/24")
	if got := v.r.Lookup(nil, "10.0.0.1"); len(got) != 1 || got[0].Entry != nil || !slices.Equal(got[0].Replicas, replicaB) {
		t.Fatalf("after the local connection left: %+v, want the remote candidate", got)
	}

	v.clk.Advance(10 * time.Second)
	e2 := v.connect("a", "10.0.0.0/24")
	v.expect("10.9.0.1")
	if got := v.r.Lookup(nil, "10.0.0.1"); len(got) != 1 || got[0].Entry != e2 {
		t.Fatalf("after reconnecting here: %+v, want the new local entry", got)
	}
	// The remote record, updated while the agent is connected here, is not
	// indexed; removing it leaves the local connection alone.
	v.remote("a", 20*time.Second, replicaC, "10.8.0.0/24")
	v.expect("10.8.0.1")
	v.r.RemoveRemote("a")
	checkIndex(t, v.r)
	v.expect("10.0.0.1", "a=10.0.0.0/24")
	v.reg.Unregister(e2)
	checkIndex(t, v.r)
	v.expect("10.0.0.1")
}

// A demoted remote agent comes after the others until its presence
// changes; a local agent that is not online is skipped while remote ones
// stay candidates.
func TestDemoteRemote(t *testing.T) {
	v := newEnv(t)
	v.remote("new", 2*time.Second, replicaB, "10.0.0.0/24")
	v.remote("old", time.Second, replicaC, "10.0.0.0/24")
	v.expect("10.0.0.1", "new=10.0.0.0/24", "old=10.0.0.0/24")
	if !v.r.DemoteRemote("new") || v.r.DemoteRemote("new") || v.r.DemoteRemote("nobody") {
		t.Fatal("DemoteRemote: want true once for a remote agent, false after and for an unknown one")
	}
	v.expect("10.0.0.1", "old=10.0.0.0/24", "new=10.0.0.0/24")
	v.remote("new", 3*time.Second, replicaC, "10.0.0.0/24")
	v.expect("10.0.0.1", "new=10.0.0.0/24", "old=10.0.0.0/24")

	v.clk.Set(base.Add(time.Hour))
	e := v.connect("local", "10.0.0.0/24")
	v.expect("10.0.0.1", "local=10.0.0.0/24", "new=10.0.0.0/24", "old=10.0.0.0/24")
	v.reg.SetSilent(e, true)
	v.expect("10.0.0.1", "new=10.0.0.0/24", "old=10.0.0.0/24")
}

// Auto-detected domains shared with a remote agent are ambiguous.
func TestAmbiguousDomainsRemote(t *testing.T) {
	v := newEnv(t)
	e := &registry.Entry{AgentID: "a", Name: "name-a", Conn: fakeConn{}}
	v.reg.Register(e)
	v.reg.Advertise(e, 1, nil, []dataplane.DomainRoute{{Name: "corp.internal", AutoDetected: true}})
	v.r.SetRemote(Remote{AgentID: "b", Name: "name-b", Replicas: replicaB,
		Routes: registry.Routes{Domains: []dataplane.DomainRoute{{Name: "corp.internal", AutoDetected: true}}}})
	if got := v.r.AmbiguousDomains("a"); !slices.Equal(got, []string{"corp.internal"}) {
		t.Errorf("AmbiguousDomains(a) = %v", got)
	}
	if got := v.r.AmbiguousDomains("b"); !slices.Equal(got, []string{"corp.internal"}) {
		t.Errorf("AmbiguousDomains(b) = %v", got)
	}
}

// RemoteAgent names an agent connected only to other replicas, whatever
// its routes, for a session that names it; not one connected here.
func TestRemoteAgent(t *testing.T) {
	v := newEnv(t)
	v.remote("far", time.Second, replicaB)
	got, ok := v.r.RemoteAgent("far")
	if want := (Candidate{AgentID: "far", Name: "name-far", ConnectedAt: base.Add(time.Second), Replicas: replicaB}); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("RemoteAgent(far) = %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := v.r.RemoteAgent("nobody"); ok {
		t.Error("RemoteAgent(nobody) found one")
	}
	v.connect("far")
	if _, ok := v.r.RemoteAgent("far"); ok {
		t.Error("RemoteAgent of an agent connected here found one")
	}
}
