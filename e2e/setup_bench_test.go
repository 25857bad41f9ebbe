package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/client"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

// BenchmarkStandingSetup times session setup on a warm standing
// connection (a new stream, the token's checks, routing, the stream
// through the agent, its dial, one echoed byte, the close) with the
// gateway on each store: sqlite, and postgres (a database on the testpg
// server; skipped without its binaries). Gateway, agent and client library
// run in this process, on loopback. It reports ops/s (sequential
// sessions), p50-ms and p99-ms; `make bench` compares the two stores.
func BenchmarkStandingSetup(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			cfg := server.Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", MaxTokenConnections: 1 << 24}
			if backend == "postgres" {
				cfg.Store, cfg.SealKeyFile = testpg.DSN(b), benchSealKey(b)
			}
			c := benchRig(b, cfg)
			once := func() time.Duration {
				start := time.Now()
				if err := muxEcho(c); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			for range 50 {
				once()
			}
			var took []time.Duration
			for b.Loop() {
				took = append(took, once())
			}
			var total time.Duration
			for _, d := range took {
				total += d
			}
			slices.Sort(took)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(float64(len(took))/total.Seconds(), "ops/s")
			b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
			b.ReportMetric(ms(took[(len(took)*99+99)/100-1]), "p99-ms")
		})
	}
}

// benchSealKey creates a seal key for a gateway on PostgreSQL, as
// `outpost gateway seal-key create` does.
func benchSealKey(b *testing.B) string {
	f := filepath.Join(b.TempDir(), "seal.key")
	if _, err := server.CreateSealKeyFile(f); err != nil {
		b.Fatal(err)
	}
	return f
}

// benchRig runs a gateway with cfg, one agent approved for 127.0.0.1/32
// and an echo target on loopback until the benchmark ends, and returns a
// client library holding a reusable session token for the target.
func benchRig(b *testing.B, cfg server.Config) *client.Client {
	b.Helper()
	log := hclog.NewNullLogger()
	g := benchGateway(b, cfg, log)
	conn := benchAPI(b, g, cfg.DataDir)
	benchAgent(b, conn, log)
	ctx := context.Background()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	resp, err := outpostv1.NewRouteResolveServiceClient(conn).CreateSession(ctx, &outpostv1.CreateSessionRequest{
		Target: ln.Addr().String(), Reusable: true, Ttl: durationpb.New(time.Hour), MaxConnections: 1 << 24})
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.New(client.Config{Gateway: resp.GetConnectUrl(), Token: resp.GetToken(), CAPin: resp.GetGatewayCaSpkiSha256(), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// benchGateway runs a gateway with cfg until the benchmark ends.
func benchGateway(b *testing.B, cfg server.Config, log hclog.Logger) *server.Gateway {
	b.Helper()
	g, err := server.New(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		g.Close()
	})
	return g
}

// benchAPI is a connection to g's API with the admin key kept in dataDir.
func benchAPI(b *testing.B, g *server.Gateway, dataDir string) *grpc.ClientConn {
	b.Helper()
	key, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		b.Fatal(err)
	}
	conn, err := apiclient.Dial(apiclient.Config{Gateway: "https://" + g.Addr().String(), APIKey: strings.TrimSpace(string(key)), CAPEM: g.CACertPEM()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// benchAgent enrolls an agent approved for 127.0.0.1/32 through conn, runs
// it until the benchmark ends, and returns its id once the gateway shows
// it online.
func benchAgent(b *testing.B, conn *grpc.ClientConn, log hclog.Logger) string {
	b.Helper()
	ctx := context.Background()
	routes := &outpostv1.RouteSet{Subnets: []string{"127.0.0.1/32"}}
	tok, err := outpostv1.NewEnrollmentServiceClient(conn).CreateEnrollmentToken(ctx, &outpostv1.CreateEnrollmentTokenRequest{AgentName: "bench", Routes: routes})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	enrolled, err := agent.Enroll(ctx, agent.EnrollOptions{Token: tok.GetToken(), ConfigDir: dir, Subnets: routes.Subnets}, log)
	if err != nil {
		b.Fatal(err)
	}
	r, err := agent.NewRunner(agent.RunnerConfig{ConfigDir: dir}, log)
	if err != nil {
		b.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	go func() { defer close(agentDone); r.Run(actx) }()
	b.Cleanup(func() { stopAgent(); <-agentDone })
	admin := outpostv1.NewAgentAdminServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, err := admin.GetAgent(ctx, &outpostv1.GetAgentRequest{AgentId: enrolled.AgentID})
		if err == nil && a.GetAgent().GetStatus() == outpostv1.AgentStatus_AGENT_STATUS_ONLINE {
			return enrolled.AgentID
		}
		if time.Now().After(deadline) {
			b.Fatalf("the agent is not online after 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
