package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
)

// approve replaces an agent's approved routes through the API.
func (gw *gateway) approve(id string, subnets, domains []string) *outpostv1.RouteSet {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewAgentAdminServiceClient(gw.conn()).SetApprovedRoutes(ctx, &outpostv1.SetApprovedRoutesRequest{
		AgentId: id, Routes: &outpostv1.RouteSet{Subnets: subnets, Domains: domains}})
	if err != nil {
		gw.t.Fatalf("SetApprovedRoutes: %v", err)
	}
	return resp.GetRoutes()
}

// resolve asks the gateway for its routing decision on target.
func (gw *gateway) resolve(target, agentID string) *outpostv1.ResolveTargetResponse {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(gw.conn()).ResolveTarget(ctx, &outpostv1.ResolveTargetRequest{Target: target, AgentId: agentID})
	if err != nil {
		gw.t.Fatalf("ResolveTarget(%s): %v", target, err)
	}
	return resp
}

// restAgent reads an agent through REST.
func (gw *gateway) restAgent(id string) map[string]any {
	gw.t.Helper()
	code, body := gw.restGet("/v1/agents/" + id)
	var out struct {
		Agent map[string]any `json:"agent"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		gw.t.Fatalf("REST GET agent: %d %s", code, body)
	}
	return out.Agent
}

// metric returns the value of one sample of the gateway's /metrics, or -1.
func (gw *gateway) metric(sample string) float64 {
	gw.t.Helper()
	code, body := gw.restGet("/metrics")
	if code != 200 {
		gw.t.Fatalf("metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// strs returns the strings of a JSON list.
func strs(v any) []string {
	out := []string{}
	l, _ := v.([]any)
	for _, e := range l {
		switch e := e.(type) {
		case string:
			out = append(out, e)
		case map[string]any:
			out = append(out, fmt.Sprint(e["domain"]))
		}
	}
	return out
}

func domainNames(ds []*outpostv1.DomainRoute) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.GetDomain())
	}
	return out
}

// An agent enrolled with a token that names routes gets only the token's
// routes it asked for; what it advertises beyond them is refused and shown
// (gRPC and REST) and counted; SetApprovedRoutes changes routing live.
func TestApprovedRoutesLimitAdvertisements(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir := t.TempDir()
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "office",
		Routes: &outpostv1.RouteSet{Subnets: []string{"127.0.0.0/8"}, Domains: []string{"approved.test"}}})
	res, err := enroll(t, tok, dir, func(o *agent.EnrollOptions) {
		o.Subnets = []string{"127.0.0.0/8", "10.77.0.0/16"}
		o.Domains = []string{"approved.test", "db.other.test"}
	})
	if err != nil {
		t.Fatal(err)
	}
	id := res.AgentID
	if !slices.Equal(res.ApprovedSubnets, []string{"127.0.0.0/8"}) || !slices.Equal(res.ApprovedDomains, []string{"approved.test"}) ||
		!slices.Equal(res.UnapprovedRoutes, []string{"10.77.0.0/16", "db.other.test"}) {
		t.Fatalf("enrollment: approved %v %v, unapproved %v", res.ApprovedSubnets, res.ApprovedDomains, res.UnapprovedRoutes)
	}
	startAgent(t, fastAgent(dir))
	a := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	switch {
	case !slices.Equal(a.GetSubnets(), []string{"127.0.0.0/8"}) || !slices.Equal(domainNames(a.GetDomains()), []string{"approved.test"}):
		t.Fatalf("routed: %v %v", a.GetSubnets(), domainNames(a.GetDomains()))
	case !slices.Equal(a.GetRejectedSubnets(), []string{"10.77.0.0/16"}) || !slices.Equal(domainNames(a.GetRejectedDomains()), []string{"db.other.test"}):
		t.Fatalf("rejected: %v %v", a.GetRejectedSubnets(), domainNames(a.GetRejectedDomains()))
	case !slices.Equal(a.GetApprovedRoutes().GetSubnets(), []string{"127.0.0.0/8"}):
		t.Fatalf("approved: %v", a.GetApprovedRoutes())
	}
	ra := gw.restAgent(id)
	if !slices.Equal(strs(ra["rejected_subnets"]), []string{"10.77.0.0/16"}) || !slices.Equal(strs(ra["rejected_domains"]), []string{"db.other.test"}) ||
		!slices.Equal(strs(ra["subnets"]), []string{"127.0.0.0/8"}) || !slices.Equal(strs(ra["ambiguous_domains"]), []string{}) {
		t.Fatalf("REST agent view: %v", ra)
	}
	if n := gw.metric("outpost_routes_rejected_total"); n != 2 {
		t.Fatalf("outpost_routes_rejected_total %v, want 2", n)
	}
	target := tcpServer(t, echo)
	echoOnce(t, gw, target)
	if d := gw.resolve("10.77.0.5:22", ""); d.GetDecision() != outpostv1.Decision_DECISION_REJECTED {
		t.Fatalf("a refused route is routed: %v", d)
	}

	// Approving the subnet routes it at once, on the same connection.
	gw.approve(id, []string{"127.0.0.0/8", "10.77.0.0/16"}, []string{"approved.test"})
	if d := gw.resolve("10.77.0.5:22", ""); d.GetDecision() != outpostv1.Decision_DECISION_AGENT || d.GetCandidates()[0].GetAgentId() != id {
		t.Fatalf("after approving 10.77.0.0/16: %v", d)
	}
	if a2 := gw.agentView(id); len(a2.GetRejectedSubnets()) != 0 || !a2.GetConnectedAt().AsTime().Equal(a.GetConnectedAt().AsTime()) {
		t.Fatalf("after approving: rejected %v, connected %v → %v", a2.GetRejectedSubnets(), a.GetConnectedAt().AsTime(), a2.GetConnectedAt().AsTime())
	}
	// Withdrawing the approval stops sessions at once.
	gw.approve(id, nil, nil)
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "no online agent advertises a route") {
		t.Fatalf("with nothing approved: %q", reason)
	}
	if a3 := gw.agentView(id); len(a3.GetSubnets()) != 0 || len(a3.GetRejectedSubnets()) != 2 {
		t.Fatalf("with nothing approved: routed %v, rejected %v", a3.GetSubnets(), a3.GetRejectedSubnets())
	}
	// REST PUT approves again.
	if code, body := gw.rest("PUT", "/v1/agents/"+id+"/approved-routes", `{"subnets":["127.0.0.0/8"]}`); code != 200 {
		t.Fatalf("REST PUT: %d %s", code, body)
	}
	echoOnce(t, gw, target)
}

// A target covered by the last approved routes of an agent that is not
// online is refused naming the agent — never dialed directly, also after a
// gateway restart; once the agent is deleted its routes are forgotten.
func TestKnownRoutesNeverGoDirect(t *testing.T) {
	dataDir := t.TempDir()
	direct := func(c *server.Config) { c.AllowDirect, c.DirectSubnets = true, []string{"127.0.0.1/32"} }
	gw := startGateway(t, dataDir, direct)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	ra := startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	var accepted atomic.Int32
	target := tcpServer(t, func(c *net.TCPConn) { accepted.Add(1); echo(c) })
	echoOnce(t, gw, target)

	ra.stop()
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 10*time.Second)
	refused := func(gw *gateway, when string) {
		t.Helper()
		before := accepted.Load()
		s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
		if err != nil {
			t.Fatal(err)
		}
		if reason := readFailure(t, s); !strings.Contains(reason, "agent office advertises 127.0.0.0/8 but is offline") {
			t.Fatalf("%s: reason %q", when, reason)
		}
		if d := gw.resolve(target, ""); d.GetDecision() != outpostv1.Decision_DECISION_REJECTED || !strings.Contains(d.GetReason(), "agent office") {
			t.Fatalf("%s: ResolveTarget %v", when, d)
		}
		if n := accepted.Load(); n != before {
			t.Fatalf("%s: the target was dialed (%d connections)", when, n-before)
		}
	}
	refused(gw, "agent stopped")

	gw.stop()
	gw = startGateway(t, dataDir, direct)
	refused(gw, "after a gateway restart")

	// Deleting the agent forgets its routes: the allow-list applies again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := outpostv1.NewAgentAdminServiceClient(gw.conn()).DeleteAgent(ctx, &outpostv1.DeleteAgentRequest{AgentId: id}); err != nil {
		t.Fatal(err)
	}
	before := accepted.Load()
	echoOnce(t, gw, target)
	if accepted.Load() != before+1 {
		t.Fatal("the direct session did not reach the target")
	}
}

// While an agent drains (its routes withdrawn, a session still live), a
// target it served is refused naming it, and not dialed directly.
func TestDrainingAgentNeverGoesDirect(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.AllowDirect, c.DirectSubnets = true, []string{"127.0.0.1/32"} })
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	opts := fastAgent(dir)
	opts.DrainTimeout = 20 * time.Second
	ra := startAgent(t, opts)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	var accepted atomic.Int32
	target := tcpServer(t, func(c *net.TCPConn) { accepted.Add(1); echo(c) })
	live, err := gw.dial(id, target)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	stopped := lcStopAsync(ra)
	lcUntil(t, 5*time.Second, "the draining agent's routes withdrawn", func() bool {
		a := gw.agentView(id)
		return a.GetStatus() == outpostv1.AgentStatus_AGENT_STATUS_ONLINE && len(a.GetSubnets()) == 0
	})
	before := accepted.Load()
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "agent office advertises 127.0.0.0/8 but is draining") {
		t.Fatalf("draining: reason %q", reason)
	}
	if n := accepted.Load(); n != before {
		t.Fatalf("the target was dialed directly (%d connections)", n-before)
	}
	live.Close()
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not stop after its session ended")
	}
}

// Two online agents auto-detecting the same search domain make it
// ambiguous: names under it need an explicit agent, and both agents show it
// (gRPC and REST); with one agent left it routes again.
func TestAutoDetectedDomainAmbiguous(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	var ids []string
	var runs []*runningAgent
	for _, name := range []string{"vpc-a", "vpc-b"} {
		dir, id := enrollAgent(t, gw, name, nil, nil)
		gw.approve(id, nil, []string{"compute.approve.test"})
		opts, resolvConf := lifecycleAgent(t, dir)
		if err := os.WriteFile(resolvConf, []byte("search compute.approve.test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, startAgent(t, opts))
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
		ids = append(ids, id)
	}
	for _, id := range ids {
		if a := gw.agentView(id); !slices.Equal(a.GetAmbiguousDomains(), []string{"compute.approve.test"}) {
			t.Fatalf("agent %s: ambiguous %v, domains %v", a.GetName(), a.GetAmbiguousDomains(), lcDomains(a))
		}
		if ra := gw.restAgent(id); !slices.Equal(strs(ra["ambiguous_domains"]), []string{"compute.approve.test"}) {
			t.Fatalf("REST: %v", ra)
		}
	}
	d := gw.resolve("ip-10-0-0-1.compute.approve.test:22", "")
	if d.GetDecision() != outpostv1.Decision_DECISION_REJECTED || !strings.Contains(d.GetReason(), "auto-detected by 2 agents") ||
		!strings.Contains(d.GetReason(), "name an agent explicitly") {
		t.Fatalf("ambiguous name: %v", d)
	}
	if d := gw.resolve("ip-10-0-0-1.compute.approve.test:22", ids[1]); d.GetDecision() != outpostv1.Decision_DECISION_AGENT {
		t.Fatalf("explicit agent: %v", d)
	}
	runs[0].stop()
	gw.waitStatus(ids[0], outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 10*time.Second)
	if a := gw.agentView(ids[1]); len(a.GetAmbiguousDomains()) != 0 {
		t.Fatalf("alone: ambiguous %v", a.GetAmbiguousDomains())
	}
	if d := gw.resolve("ip-10-0-0-1.compute.approve.test:22", ""); d.GetDecision() != outpostv1.Decision_DECISION_AGENT || d.GetCandidates()[0].GetAgentId() != ids[1] {
		t.Fatalf("one agent left: %v", d)
	}
}

// One advertisement carries at most max_routes_per_agent routes (exactly
// the limit passes, one more is refused whole) and an agent changes its
// routes at most max_route_changes_per_minute times a minute; the previous
// routes stay meanwhile.
func TestRouteAdvertisementCaps(t *testing.T) {
	clk := &lcClock{}
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.MaxRoutesPerAgent, c.MaxRouteChangesPerMinute, c.Now = 3, 2, clk.Now
	})
	dir, id := enrollAgent(t, gw, "raw", loopback, nil)
	conn := rawDial(t, gw, loadCert(t, dir))
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	w := dataplane.NewControlWriter(ctrl)
	send := func(epoch uint64, subnets ...string) {
		t.Helper()
		adv := &dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: epoch}
		for _, s := range subnets {
			adv.Subnets = append(adv.Subnets, netip.MustParsePrefix(s))
		}
		if err := w.Send(adv); err != nil {
			t.Fatal(err)
		}
	}
	routesAt := func(epoch uint64, n int) func() bool {
		return func() bool {
			a := gw.agentView(id)
			return a.GetRouteEpoch() == epoch && len(a.GetSubnets()) == n
		}
	}
	refusedCount := func(reason string, n float64) func() bool {
		return func() bool {
			return gw.metric(`outpost_route_advertisements_refused_total{reason="`+reason+`"}`) == n
		}
	}

	send(1, "127.0.0.0/8", "127.1.0.0/16", "127.2.0.0/16") // exactly the limit: change 1
	lcUntil(t, 5*time.Second, "three routes at epoch 1", routesAt(1, 3))
	send(2, "127.0.0.0/8", "127.1.0.0/16", "127.2.0.0/16", "127.3.0.0/16") // one more: refused
	lcUntil(t, 5*time.Second, "the long advertisement refused", refusedCount("too_many_routes", 1))
	if !routesAt(1, 3)() {
		t.Fatalf("the previous routes did not stay: %v", gw.agentView(id))
	}

	send(3, "127.0.0.0/8") // change 2: the limit
	lcUntil(t, 5*time.Second, "one route at epoch 3", routesAt(3, 1))
	send(4, "127.1.0.0/16") // change 3: over the limit
	lcUntil(t, 5*time.Second, "the third change ignored", refusedCount("rate_limited", 1))
	if !routesAt(3, 1)() {
		t.Fatalf("the previous routes did not stay: %v", gw.agentView(id))
	}
	clk.Set(time.Minute)
	send(4, "127.1.0.0/16") // the agent's periodic re-advertisement
	lcUntil(t, 5*time.Second, "the change applied after the minute", routesAt(4, 1))
}
