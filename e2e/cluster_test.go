package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// startReplicas runs n gateways on the PostgreSQL database dsn with one
// seal key, each with its own data directory holding the admin key of the
// first; mutate adjusts each config.
func startReplicas(t *testing.T, dsn string, n int, mutate func(i int, c *server.Config)) []*gateway {
	t.Helper()
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if _, err := server.CreateSealKeyFile(sealKey); err != nil {
		t.Fatal(err)
	}
	var gws []*gateway
	for i := range n {
		dir := t.TempDir()
		if i > 0 {
			key, err := os.ReadFile(filepath.Join(gws[0].cfg.DataDir, "admin.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "admin.key"), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		gws = append(gws, startGateway(t, dir, func(c *server.Config) {
			c.Store, c.SealKeyFile = dsn, sealKey
			c.MetricsListen = "127.0.0.1:0"
			if mutate != nil {
				mutate(i, c)
			}
		}))
	}
	return gws
}

// plainMetric reads one sample from the gateway's separate metrics
// listener, which needs no API key (and so no store); 0 when absent.
func (gw *gateway) plainMetric(sample string) float64 {
	gw.t.Helper()
	resp, err := http.Get("http://" + gw.g.MetricsAddr().String() + "/metrics")
	if err != nil {
		gw.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// An agent connected to replica 2 and deleted through replica 1 is closed
// on replica 2 within a second (NOTIFY), with agent-deleted — also after
// the database ended the replicas' listener connections; replica 2 has
// forgotten its cached admission, so with the database down the agent,
// restarted, is not admitted from the cache.
func TestClusterDeletePropagates(t *testing.T) {
	pg := testpg.NewServer(t)
	dsn := pg.DSN(t)
	gws := startReplicas(t, dsn, 2, nil)
	gw1, gw2 := gws[0], gws[1]
	dir, id := enrollAgent(t, gw2, "office", loopback, nil)
	ra := startAgent(t, fastAgent(dir))
	gw2.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)
	s, err := gw2.dial(id, target)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// The database ends both listeners' connections: they reconnect.
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	listeners := func() (pids []int) {
		rows, err := raw.Query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'outpost-listener'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var pid int
			rows.Scan(&pid)
			pids = append(pids, pid)
		}
		return pids
	}
	var before []int
	lcUntil(t, 5*time.Second, "both replicas listening", func() bool { before = listeners(); return len(before) == 2 })
	if _, err := raw.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'outpost-listener'`); err != nil {
		t.Fatal(err)
	}
	lcUntil(t, 10*time.Second, "both listeners back on new connections", func() bool {
		now := listeners()
		return len(now) == 2 && !slices.Contains(now, before[0]) && !slices.Contains(now, before[1])
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := outpostv1.NewAgentAdminServiceClient(gw1.conn()).DeleteAgent(ctx,
		&outpostv1.DeleteAgentRequest{AgentId: id}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	lcUntil(t, time.Second, "the agent closed on replica 2", func() bool {
		s, err := gw2.dial(id, target)
		if err == nil {
			s.Close()
		}
		return errors.Is(err, servertest.ErrAgentNotConnected)
	})
	t.Logf("closed on replica 2 %v after the deletion through replica 1", time.Since(deleted).Round(time.Millisecond))
	if err := ra.exit(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("the agent's Run: %v, want the deletion", err)
	}

	// The database down: replica 2 can only go by its cache, which must
	// not admit the deleted agent.
	pg.Stop(t)
	const refusedUnavailable = `outpost_agent_connections_total{outcome="unavailable"}`
	refusals := gw2.plainMetric(refusedUnavailable)
	startAgent(t, fastAgent(dir))
	lcUntil(t, 15*time.Second, "two refusals of the restarted agent", func() bool {
		return gw2.plainMetric(refusedUnavailable) >= refusals+2
	})
	if s, err := gw2.dial(id, target); !errors.Is(err, servertest.ErrAgentNotConnected) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("the deleted agent was admitted with the database down: %v", err)
	}
	pg.Start(t)
}

// gateways lists the replicas through gw's API.
func (gw *gateway) gateways() []*outpostv1.Gateway {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewAgentAdminServiceClient(gw.conn()).ListGateways(ctx, &outpostv1.ListGatewaysRequest{})
	if err != nil {
		gw.t.Fatalf("ListGateways: %v", err)
	}
	return resp.GetGateways()
}

// replicaID is gw's own replica id, as it lists itself once registered.
func (gw *gateway) replicaID() string {
	gw.t.Helper()
	var id string
	lcUntil(gw.t, 5*time.Second, "the gateway lists itself", func() bool {
		for _, g := range gw.gateways() {
			if g.GetSelf() {
				id = g.GetReplicaId()
			}
		}
		return id != ""
	})
	return id
}

// gatewayStates summarizes ListGateways by replica id: "state/agents".
func (gw *gateway) gatewayStates() map[string]string {
	out := map[string]string{}
	for _, g := range gw.gateways() {
		state := strings.ToLower(strings.TrimPrefix(g.GetState().String(), "GATEWAY_STATE_"))
		out[g.GetReplicaId()] = fmt.Sprintf("%s/%d", state, g.GetAgentCount())
	}
	return out
}

// waitGateways waits until gw lists want.
func (gw *gateway) waitGateways(within time.Duration, want map[string]string) {
	gw.t.Helper()
	var got map[string]string
	lcUntil(gw.t, within, "ListGateways", func() bool {
		got = gw.gatewayStates()
		return maps.Equal(got, want)
	})
}

// Three replicas on one database: each lists all three, serving, with the
// agents connected to each and itself marked; the agents show the replica
// holding them through any replica (gRPC and REST). An agent deleted
// through one replica is closed on the one holding it. The peer link
// shares each replica's QUIC endpoint. A replica stopped
// gracefully is draining, then gone after the timeout, then swept.
func TestClusterListGateways(t *testing.T) {
	gws := startReplicas(t, testpg.DSN(t), 3, func(_ int, c *server.Config) {
		c.ReplicaHeartbeat = server.Duration(100 * time.Millisecond)
		c.ReplicaGoneAfter = server.Duration(2 * time.Second)
		c.ReplicaSweepGrace = server.Duration(2 * time.Second)
		c.ReplicaName = "replica-" + filepath.Base(c.DataDir)
	})
	ids := []string{gws[0].replicaID(), gws[1].replicaID(), gws[2].replicaID()}
	dirA, a := enrollAgent(t, gws[0], "office-a", loopback, nil)
	dirB, b := enrollAgent(t, gws[2], "office-b", loopback, nil)
	agentA := startAgent(t, fastAgent(dirA))
	startAgent(t, fastAgent(dirB))
	gws[0].waitStatus(a, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	gws[2].waitStatus(b, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	for _, gw := range gws {
		gw.waitGateways(5*time.Second, map[string]string{ids[0]: "serving/1", ids[1]: "serving/0", ids[2]: "serving/1"})
	}
	for _, g := range gws[1].gateways() {
		if !strings.HasPrefix(g.GetName(), "replica-") || g.GetQuicEndpoint() == "" || g.GetApiEndpoint() == "" ||
			g.GetStartedAt() == nil || g.GetHeartbeatAt() == nil || g.GetPeerEndpoint() != g.GetQuicEndpoint() {
			t.Errorf("gateway listed as %v", g)
		}
	}
	if got := gws[1].agentView(a).GetReplicaIds(); !slices.Equal(got, ids[:1]) {
		t.Errorf("GetAgent(a) through replica 2: replica_ids %v, want %v", got, ids[:1])
	}
	code, body := gws[1].restGet("/v1/agents")
	if code != http.StatusOK || !strings.Contains(body, `"replica_ids":["`+ids[0]+`"]`) || !strings.Contains(body, `"replica_ids":["`+ids[2]+`"]`) {
		t.Errorf("GET /v1/agents through replica 2: %d %s", code, body)
	}
	code, body = gws[0].restGet("/v1/gateways")
	if code != http.StatusOK || strings.Count(body, `"state":"GATEWAY_STATE_SERVING"`) != 3 {
		t.Errorf("GET /v1/gateways: %d %s", code, body)
	}
	// The CLI, with the CA's pin: a PostgreSQL replica keeps no ca.pem.
	block, _ := pem.Decode(gws[1].g.CACertPEM())
	pin := transport.SPKIHashHex(mustCert(t, block.Bytes).RawSubjectPublicKeyInfo)
	admin := []string{"--gateway", gws[1].url, "--api-key-file", filepath.Join(gws[1].cfg.DataDir, "admin.key"), "--ca-pin", pin}
	out, err := exec.Command(outpostBinary(t), append([]string{"gateways"}, admin...)...).CombinedOutput()
	if err != nil || strings.Count(string(out), " serving ") != 3 || !strings.Contains(string(out), ids[1]+" *") {
		t.Errorf("outpost gateways: %v\n%s", err, out)
	}
	out, err = exec.Command(outpostBinary(t), append([]string{"agents"}, admin...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "REPLICAS") || !strings.Contains(string(out), "office-a") {
		t.Errorf("outpost agents: %v\n%s", err, out)
	}

	// Agent a, on replica 1, deleted through replica 2: closed on replica
	// 1, whose count drops.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := outpostv1.NewAgentAdminServiceClient(gws[1].conn()).DeleteAgent(ctx, &outpostv1.DeleteAgentRequest{AgentId: a}); err != nil {
		t.Fatal(err)
	}
	target := tcpServer(t, echo)
	lcUntil(t, time.Second, "agent a closed on replica 1", func() bool {
		s, err := gws[0].dial(a, target)
		if err == nil {
			s.Close()
		}
		return errors.Is(err, servertest.ErrAgentNotConnected)
	})
	if err := agentA.exit(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("agent a's Run: %v, want the deletion", err)
	}
	gws[2].waitGateways(5*time.Second, map[string]string{ids[0]: "serving/0", ids[1]: "serving/0", ids[2]: "serving/1"})

	// Replica 3 stops: draining, its agent gone from it; then gone; then
	// swept.
	gws[2].stop()
	gws[0].waitGateways(5*time.Second, map[string]string{ids[0]: "serving/0", ids[1]: "serving/0", ids[2]: "draining/0"})
	if got := gws[0].agentView(b).GetReplicaIds(); len(got) != 0 {
		t.Errorf("the agent of the stopped replica is still held by %v", got)
	}
	gws[0].waitGateways(10*time.Second, map[string]string{ids[0]: "serving/0", ids[1]: "serving/0", ids[2]: "gone/0"})
	gws[1].waitGateways(10*time.Second, map[string]string{ids[0]: "serving/0", ids[1]: "serving/0"})
}

func mustCert(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
