package e2e

import (
	"context"
	"crypto/sha256"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// BenchmarkPeerHop compares a session through the agent's own replica
// (local) with one opened at a replica that does not hold the agent and
// forwarded over the peer link (peer): two replicas on one PostgreSQL
// database, an agent connected to the first only, all in this process on
// loopback (so a QUIC round trip is tens of microseconds: the figures show
// the hop's processing, not a network's latency). setup opens a session
// through the tunnel (no token, routing or audit: servertest), echoes one
// byte and closes it, and reports p50-ms and p99-ms; up and down carry
// 64 MiB one way and report MB/s.
func BenchmarkPeerHop(b *testing.B) {
	dsn := testpg.DSN(b)
	key := benchSealKey(b)
	log := hclog.NewNullLogger()
	dirs := []string{b.TempDir(), b.TempDir()}
	var gws []*server.Gateway
	for _, dir := range dirs {
		gws = append(gws, benchGateway(b, server.Config{DataDir: dir, Store: dsn, SealKeyFile: key,
			Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, log))
	}
	// The first replica made the admin key, in its data directory.
	id := benchAgent(b, benchAPI(b, gws[0], dirs[0]), log)
	echoAddr := testtarget.Listen(b, "127.0.0.1:0", testtarget.Echo).String()
	hashAddr := testtarget.Listen(b, "127.0.0.1:0", testtarget.Hash).String()
	const n = 64 << 20
	sourceAddr := testtarget.Listen(b, "127.0.0.1:0", testtarget.Source(n)).String()
	// Replica B hears of the agent's connection through the store.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := benchDial(gws[1], id, echoAddr)
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("replica B does not reach the agent: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	for _, path := range []struct {
		name string
		g    *server.Gateway
	}{{"local", gws[0]}, {"peer", gws[1]}} {
		b.Run("setup/"+path.name, func(b *testing.B) {
			once := func() time.Duration {
				start := time.Now()
				s, err := benchDial(path.g, id, echoAddr)
				if err != nil {
					b.Fatal(err)
				}
				buf := []byte{42}
				if _, err := s.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, buf); err != nil {
					b.Fatal(err)
				}
				s.Close()
				return time.Since(start)
			}
			for range 20 {
				once()
			}
			var took []time.Duration
			for b.Loop() {
				took = append(took, once())
			}
			slices.Sort(took)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
			b.ReportMetric(ms(took[(len(took)*99+99)/100-1]), "p99-ms")
		})
		b.Run("up/"+path.name, func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				s, err := benchDial(path.g, id, hashAddr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(s, testtarget.Pattern(n)); err != nil {
					b.Fatal(err)
				}
				s.CloseWrite()
				sum, err := io.ReadAll(s)
				if err != nil || len(sum) != sha256.Size {
					b.Fatalf("digest: %x %v", sum, err)
				}
				s.Close()
			}
		})
		b.Run("down/"+path.name, func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				s, err := benchDial(path.g, id, sourceAddr)
				if err != nil {
					b.Fatal(err)
				}
				s.CloseWrite()
				if got, err := io.Copy(io.Discard, s); err != nil || got != n {
					b.Fatalf("read %d bytes: %v", got, err)
				}
				s.Close()
			}
		})
	}
}

func benchDial(g *server.Gateway, agentID, target string) (servertest.AgentSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return servertest.DialAgent(ctx, g, agentID, target)
}
