package e2e

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testlb"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
)

// An agent with two HA connections behind one balancer in front of three
// replicas on one database (round robin on the client's source address)
// holds a connection to two distinct replicas: each of them lists one
// agent, and serves a session through its own connection. When one of
// them stops (leaving the balancer first, as after a failed health
// check), the agent re-homes that connection on the third replica.
func TestClusterAgentHoldsTwoReplicas(t *testing.T) {
	gws := startReplicas(t, testpg.DSN(t), 3, func(_ int, c *server.Config) {
		c.ReplicaHeartbeat = server.Duration(100 * time.Millisecond)
	})
	ids := []string{gws[0].replicaID(), gws[1].replicaID(), gws[2].replicaID()}
	var backends []netip.AddrPort
	for _, gw := range gws {
		backends = append(backends, gw.g.QUICAddr().(*net.UDPAddr).AddrPort())
	}
	lb := testlb.Start(t, backends...)
	dir, id := enrollAgent(t, gws[0], "office", loopback, nil)
	lcEditTunnel(t, dir, func(tun map[string]any) { tun["GatewayEndpoint"] = lb.Addr() })
	cfg := fastAgent(dir)
	cfg.HAConnections = 2
	startAgent(t, cfg)

	holders := func(want ...string) {
		t.Helper()
		slices.Sort(want)
		var got []string
		lcUntil(t, 10*time.Second, "the agent held by replicas "+strings.Join(want, ", "), func() bool {
			got = slices.Sorted(slices.Values(gws[0].agentView(id).GetReplicaIds()))
			return slices.Equal(got, want)
		})
	}
	// The first connection goes to replica 1, the second to replica 2.
	holders(ids[0], ids[1])
	for _, gw := range gws {
		gw.waitGateways(5*time.Second, map[string]string{ids[0]: "serving/1", ids[1]: "serving/1", ids[2]: "serving/0"})
	}
	target := tcpServer(t, echo)
	lcEcho(t, gws[0], id, target, "through replica 1")
	lcEcho(t, gws[1], id, target, "through replica 2")

	lb.SetDown(1)
	gws[1].stop()
	holders(ids[0], ids[2])
	lcEcho(t, gws[0], id, target, "still through replica 1")
	lcEcho(t, gws[2], id, target, "through replica 3")
}
