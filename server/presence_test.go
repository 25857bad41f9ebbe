package server

import (
	"crypto/tls"
	"encoding/pem"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/internal/testtls"
)

// startReplicaOn runs a gateway named name on the PostgreSQL database dsn,
// with its own data directory and the seal key in keyFile.
func startReplicaOn(t *testing.T, dsn, keyFile, name string) *running {
	t.Helper()
	g, err := New(Config{DataDir: t.TempDir(), Store: dsn, SealKeyFile: keyFile, ReplicaName: name,
		Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return run(t, g)
}

// connectAgent enrolls agent name through r, approved for subnet, connects
// it to r over QUIC with its certificate and advertises subnet; it returns
// the agent id and the connection, closed when the test ends.
func connectAgent(t *testing.T, r *running, key, name string, subnet netip.Prefix) (string, *quic.Conn) {
	t.Helper()
	ctx := withKey(t.Context(), key)
	enroll := outpostv1.NewEnrollmentServiceClient(r.grpcConn(t))
	tok, err := enroll.CreateEnrollmentToken(ctx, &outpostv1.CreateEnrollmentTokenRequest{AgentName: name,
		Routes: &outpostv1.RouteSet{Subnets: []string{subnet.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	agentKey := testtls.Key(t)
	res, err := enrollCall(t.Context(), enroll, tok.Token, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, agentKey, name), AgentName: name})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	block, _ := pem.Decode([]byte(res.GetClientCertPem()))
	if block == nil {
		t.Fatal("the agent certificate does not parse")
	}
	cfg := transport.ClientTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{block.Bytes}, PrivateKey: agentKey}},
		RootCAs:      r.pool, ServerName: "localhost",
	})
	conn, err := quic.DialAddr(t.Context(), r.g.QUICAddr().String(), cfg, &quic.Config{KeepAlivePeriod: time.Second})
	if err != nil {
		t.Fatalf("agent dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	control, err := conn.OpenStreamSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := dataplane.NewControlWriter(control).Send(&dataplane.RouteAdvertise{
		Version: dataplane.ProtocolVersion, Epoch: 1, Subnets: []netip.Prefix{subnet}}); err != nil {
		t.Fatal(err)
	}
	return res.GetAgentId(), conn
}

// resolveUntil asks r's ResolveTarget for target until ok holds of the
// answer, failing the test after 10 s; it returns the answer and how long
// it took.
func resolveUntil(t *testing.T, r *running, key, target string, ok func(*outpostv1.ResolveTargetResponse) bool) (*outpostv1.ResolveTargetResponse, time.Duration) {
	t.Helper()
	client := outpostv1.NewRouteResolveServiceClient(r.grpcConn(t))
	start := time.Now()
	for {
		resp, err := client.ResolveTarget(withKey(t.Context(), key), &outpostv1.ResolveTargetRequest{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		if ok(resp) {
			return resp, time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("ResolveTarget(%s) on %s: %v", target, r.g.member.ID(), resp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two gateways on one PostgreSQL database: an agent connected only to
// replica A is routed by replica B, by its routes or by its id, naming it
// and replica A in its decision, and listed online there; once it disconnects, both say it is
// offline (replica B learned its routes from the store, not from a
// connection of its own).
func TestClusterRoutesToAnotherReplica(t *testing.T) {
	dsn := testpg.DSN(t)
	sealKey := newSealKey(t)
	a := startReplicaOn(t, dsn, sealKey, "gw-a")
	b := startReplicaOn(t, dsn, sealKey, "gw-b")
	key := adminKey(t, a.g.cfg.DataDir)

	id, conn := connectAgent(t, a, key, "office", netip.MustParsePrefix("10.77.0.0/16"))
	toAgent := func(resp *outpostv1.ResolveTargetResponse) bool {
		c := resp.GetCandidates()
		return resp.GetDecision() == outpostv1.Decision_DECISION_AGENT && len(c) == 1 && c[0].GetAgentId() == id
	}
	local, _ := resolveUntil(t, a, key, "10.77.1.5:22", toAgent)
	if want := "10.77.1.5 matches 10.77.0.0/16 advertised by agent office"; local.GetReason() != want {
		t.Errorf("replica A's reason %q, want %q", local.GetReason(), want)
	}
	remote, took := resolveUntil(t, b, key, "10.77.1.5:22", toAgent)
	t.Logf("replica B routes to the agent %v after replica A does", took)
	if want := "10.77.1.5 matches 10.77.0.0/16 advertised by agent office (connected to replica gw-a)"; remote.GetReason() != want {
		t.Errorf("replica B's reason %q, want %q", remote.GetReason(), want)
	}
	if took > time.Second {
		t.Errorf("replica B routed to the agent %v after replica A, want within a second (notified)", took)
	}

	explicit, err := outpostv1.NewRouteResolveServiceClient(b.grpcConn(t)).ResolveTarget(withKey(t.Context(), key),
		&outpostv1.ResolveTargetRequest{Target: "10.77.1.5:22", AgentId: id})
	if err != nil {
		t.Fatal(err)
	}
	if want := "agent office was requested explicitly (connected to replica gw-a)"; !toAgent(explicit) || explicit.GetReason() != want {
		t.Errorf("replica B, the agent named: %v, want it, %q", explicit, want)
	}

	view, err := outpostv1.NewAgentAdminServiceClient(b.grpcConn(t)).GetAgent(withKey(t.Context(), key), &outpostv1.GetAgentRequest{AgentId: id})
	if err != nil {
		t.Fatal(err)
	}
	if v := view.GetAgent(); v.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || !slices.Equal(v.GetSubnets(), []string{"10.77.0.0/16"}) ||
		!slices.Equal(v.GetReplicaIds(), []string{a.g.member.ID()}) {
		t.Errorf("replica B's view of the agent: %v, want online on replica A, serving 10.77.0.0/16", v)
	}

	// Gone: both replicas still know its routes, and say it is offline.
	conn.CloseWithError(0, "")
	for _, r := range []*running{a, b} {
		resolveUntil(t, r, key, "10.77.1.5:22", func(resp *outpostv1.ResolveTargetResponse) bool {
			return resp.GetDecision() == outpostv1.Decision_DECISION_REJECTED &&
				resp.GetReason() == "agent office advertises 10.77.0.0/16 but is offline"
		})
	}
}
