package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
// on replica 2 within a second (NOTIFY), with agent-deleted; replica 2 has
// forgotten its cached admission, so with the database down the agent,
// restarted, is not admitted from the cache.
func TestClusterDeletePropagates(t *testing.T) {
	pg := testpg.NewServer(t)
	gws := startReplicas(t, pg.DSN(t), 2, nil)
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
	before := gw2.plainMetric(refusedUnavailable)
	startAgent(t, fastAgent(dir))
	lcUntil(t, 15*time.Second, "two refusals of the restarted agent", func() bool {
		return gw2.plainMetric(refusedUnavailable) >= before+2
	})
	if s, err := gw2.dial(id, target); !errors.Is(err, servertest.ErrAgentNotConnected) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("the deleted agent was admitted with the database down: %v", err)
	}
	pg.Start(t)
}
