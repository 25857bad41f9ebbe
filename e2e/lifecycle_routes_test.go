package e2e

import (
	"os"
	"slices"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/servertest"
)

// lcDomains renders an API agent's domains as "name" or "name (auto)".
func lcDomains(a *outpostv1.Agent) []string {
	var out []string
	for _, d := range a.GetDomains() {
		s := d.GetDomain()
		if d.GetAutoDetected() {
			s += " (auto)"
		}
		out = append(out, s)
	}
	return out
}

// Rewriting agent.json changes the routes on the live connection: the API
// shows epoch + 1 and the new subnet with the same connection, and the
// agent admits sessions to the new subnet at once.
func TestLifecycleLiveRouteChange(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", []string{"10.99.0.0/16"}, []string{"contoso.test"})
	opts, _ := lifecycleAgent(t, dir)
	startAgent(t, opts)
	a1 := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)
	if _, err := gw.dial(id, target); !isAgentError(err, servertest.ErrAgentRefused, "loopback") {
		t.Fatalf("loopback before it is advertised: %v", err)
	}

	gw.approve(id, []string{"10.99.0.0/16", "127.0.0.0/8"}, []string{"contoso.test"})
	lcEditTunnel(t, dir, func(tun map[string]any) {
		tun["AdvertiseSubnets"] = []any{"10.99.0.0/16", "127.0.0.0/8"}
	})
	var a2 *outpostv1.Agent
	lcUntil(t, 5*time.Second, "epoch + 1 in the API", func() bool {
		a2 = gw.agentView(id)
		return a2.GetRouteEpoch() == a1.GetRouteEpoch()+1
	})
	switch {
	case !slices.Equal(a2.GetSubnets(), []string{"10.99.0.0/16", "127.0.0.0/8"}):
		t.Fatalf("subnets %v", a2.GetSubnets())
	case !slices.Equal(lcDomains(a2), []string{"contoso.test"}):
		t.Fatalf("domains %v", lcDomains(a2))
	case !a2.GetConnectedAt().AsTime().Equal(a1.GetConnectedAt().AsTime()) || a2.GetRemoteAddr() != a1.GetRemoteAddr():
		t.Fatalf("reconnected: connected_at %v → %v, remote %s → %s",
			a1.GetConnectedAt().AsTime(), a2.GetConnectedAt().AsTime(), a1.GetRemoteAddr(), a2.GetRemoteAddr())
	}
	lcEcho(t, gw, id, target, "through the new route")

	// Taking the subnet away refuses it again, still on the same connection.
	lcEditTunnel(t, dir, func(tun map[string]any) {
		tun["AdvertiseSubnets"] = []any{"10.99.0.0/16"}
	})
	lcUntil(t, 5*time.Second, "epoch + 2 in the API", func() bool {
		return gw.agentView(id).GetRouteEpoch() == a1.GetRouteEpoch()+2
	})
	if _, err := gw.dial(id, target); !isAgentError(err, servertest.ErrAgentRefused, "loopback") {
		t.Fatalf("loopback after it was withdrawn: %v", err)
	}
	if a3 := gw.agentView(id); !a3.GetConnectedAt().AsTime().Equal(a1.GetConnectedAt().AsTime()) {
		t.Fatal("reconnected")
	}
}

// With no route configured the agent advertises the host's domain with
// auto_detected; configuring a domain, or turning detection off, replaces it
// live.
func TestLifecycleAutoDetectedDomain(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	// Detection is for an agent with no route configured; what it detects
	// counts once approved.
	dir, id := enrollAgent(t, gw, "office", nil, nil)
	gw.approve(id, nil, []string{"corp.lifecycle.test", "contoso.test"})
	opts, resolvConf := lifecycleAgent(t, dir)
	if err := os.WriteFile(resolvConf, []byte("nameserver 10.0.0.53\nsearch Corp.Lifecycle.Test lifecycle.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startAgent(t, opts)
	a1 := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	if got := lcDomains(a1); !slices.Equal(got, []string{"corp.lifecycle.test (auto)"}) {
		t.Fatalf("domains %v, want the detected one", got)
	}

	lcEditTunnel(t, dir, func(tun map[string]any) { tun["AdvertiseDomains"] = []any{"contoso.test"} })
	lcUntil(t, 5*time.Second, "the configured domain replaces the detected one", func() bool {
		a := gw.agentView(id)
		return a.GetRouteEpoch() == a1.GetRouteEpoch()+1 && slices.Equal(lcDomains(a), []string{"contoso.test"})
	})

	lcEditTunnel(t, dir, func(tun map[string]any) {
		tun["AdvertiseDomains"] = []any{}
		tun["AutoDetectDomain"] = false
	})
	lcUntil(t, 5*time.Second, "no domain with detection off", func() bool {
		a := gw.agentView(id)
		return a.GetRouteEpoch() == a1.GetRouteEpoch()+2 && len(a.GetDomains()) == 0
	})
	if a := gw.agentView(id); !a.GetConnectedAt().AsTime().Equal(a1.GetConnectedAt().AsTime()) {
		t.Fatal("reconnected")
	}
}
