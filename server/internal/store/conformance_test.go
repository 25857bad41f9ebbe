package store

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testpg"
)

// conformance is what every Store implementation must do: TestConformance
// runs each case on each backend, on a fresh database.
var conformance = []struct {
	name string
	run  func(t *testing.T, f *fixture)
}{
	// Opening and lifetime.
	{"OpenAppliesMigrationsOnce", testOpenAppliesMigrationsOnce},
	{"OpenRefusesNewerSchema", testOpenRefusesNewerSchema},
	{"SessionTokensMigration", testSessionTokensMigration},
	{"CloseIsIdempotent", testCloseIsIdempotent},
	{"RestartLosesNothing", testRestartLosesNothing},
	{"ForeignKeyEnforced", testForeignKeyEnforced},
	// API keys.
	{"APIKeys", testAPIKeys},
	// Enrollment and agents.
	{"EnrollAndGetAgent", testEnrollAndGetAgent},
	{"EnrollIdempotentRetry", testEnrollIdempotentRetry},
	{"EnrollTokenUsedWithOtherCSR", testEnrollTokenUsedWithOtherCSR},
	{"EnrollNameTakenRollsBack", testEnrollNameTakenRollsBack},
	{"EnrollDeletedNameReusable", testEnrollDeletedNameReusable},
	{"EnrollDuplicateAgentID", testEnrollDuplicateAgentID},
	{"EnrollInvalid", testEnrollInvalid},
	{"EnrollConcurrentSameJTI", testEnrollConcurrentSameJTI},
	{"EnrollConcurrentRetries", testEnrollConcurrentRetries},
	{"EnrollConcurrentSameName", testEnrollConcurrentSameName},
	{"EnrollAcrossProcesses", testEnrollAcrossProcesses},
	{"ListAgentsPagination", testListAgentsPagination},
	{"DeleteAgent", testDeleteAgent},
	{"GoneAgents", testGoneAgents},
	{"UpdateAgentCert", testUpdateAgentCert},
	{"EnrollmentTokens", testEnrollmentTokens},
	{"AgentRoutes", testAgentRoutes},
	{"AgentRoutesNeedALiveAgent", testAgentRoutesNeedALiveAgent},
	{"MigrationAddsEmptyRoutes", testMigrationAddsEmptyRoutes},
	// Sessions and session tokens.
	{"Sessions", testSessions},
	{"RecordSessions", testRecordSessions},
	{"RecordSessionsLargeBatch", testRecordSessionsLargeBatch},
	{"ListSessions", testListSessions},
	{"UseSessionToken", testUseSessionToken},
	{"UseSessionTokenConcurrent", testUseSessionTokenConcurrent},
	{"UseSessionTokenLimitAcrossHandles", testUseSessionTokenLimitAcrossHandles},
	{"UseSessionTokenN", testUseSessionTokenN},
	{"UseSessionTokenNAcrossHandles", testUseSessionTokenNAcrossHandles},
	{"PruneExpired", testPruneExpired},
	{"PruneSessions", testPruneSessions},
	// Cluster secrets.
	{"Secrets", testSecrets},
	{"ImportRows", testImportRows},
	// Cluster replicas.
	{"Replicas", testReplicas},
	{"AgentConnections", testAgentConnections},
	{"AgentPresence", testAgentPresence},
}

// TestConformance runs the conformance cases on SQLite and on PostgreSQL
// (skipped without a PostgreSQL server, failed instead with CI set).
func TestConformance(t *testing.T) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.name, func(t *testing.T) {
			if b.name == postgresBackend.name {
				testpg.Require(t)
			}
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.run(t, newFixture(t, b)) })
			}
		})
	}
}

func testCloseIsIdempotent(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Ping(ctxT(t)); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if _, err := s.UseSessionToken(ctxT(t), "j", time.Now(), 1); err == nil {
		t.Error("write after Close succeeded")
	}
}

// The schema's foreign key is enforced: a consumed token must name an
// agent.
func testForeignKeyEnforced(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	_, err := s.db.ExecContext(ctxT(t), `INSERT INTO consumed_enrollment_tokens (jti, expires_at, csr_sha256, agent_id, cert_pem, consumed_at)
VALUES ('j', 1, 'c', 'no-such-agent', 'p', 1)`)
	if err == nil {
		t.Error("foreign key not enforced")
	}
}

func testPruneSessions(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	now := f.clk.Now()
	for id, started := range map[string]time.Time{"old": now.Add(-time.Hour), "edge": now, "new": now.Add(time.Second)} {
		if err := s.InsertSession(ctx, SessionRecord{ID: id, Target: "db:5432", StartedAt: started}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneSessions(ctx, now); err != nil || n != 1 {
		t.Fatalf("PruneSessions: %d, %v; want 1", n, err)
	}
	if _, err := s.GetSession(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old session: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"edge", "new"} {
		if _, err := s.GetSession(ctx, id); err != nil {
			t.Errorf("session %s pruned: %v", id, err)
		}
	}
}

// testRestartLosesNothing writes one of everything, closes, reopens and
// reads it all back.
func testRestartLosesNothing(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)

	if err := s.CreateAPIKey(ctx, APIKey{ID: "k1", Name: "admin", Hash: []byte{1, 2, 3}, Scopes: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: "t1", AgentName: "a", ExpiresAt: f.clk.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	enrolled := mustEnroll(t, s, enrollReq(f.clk, "t1", "a", "csr1"))
	if _, err := s.UseSessionToken(ctx, "s1", f.clk.Now().Add(time.Minute), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseSessionToken(ctx, "r1", f.clk.Now().Add(time.Minute), 3); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertSession(ctx, SessionRecord{ID: "s1", Target: "db:5432", AgentID: enrolled.Agent.ID, KeyID: "k1", ClientAddr: "192.0.2.9:40000"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, _ := f.open(t)
	if n, err := s2.CountAPIKeys(ctx); err != nil || n != 1 {
		t.Errorf("api keys after restart: %d, %v", n, err)
	}
	if a, err := s2.GetAgent(ctx, enrolled.Agent.ID); err != nil || !reflect.DeepEqual(a, enrolled.Agent) {
		t.Errorf("agent after restart: %+v, %v; want %+v", a, err, enrolled.Agent)
	}
	if _, err := s2.EnrollAgent(ctx, enrollReq(f.clk, "t1", "b", "csr2")); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("consumed jti usable after restart: %v", err)
	}
	if _, err := s2.UseSessionToken(ctx, "s1", f.clk.Now(), 1); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("consumed session token usable after restart: %v", err)
	}
	if n, err := s2.UseSessionToken(ctx, "r1", f.clk.Now(), 3); n != 2 || err != nil {
		t.Errorf("reusable token's count after restart: use %d, %v; want 2", n, err)
	}
	if r, err := s2.GetSession(ctx, "s1"); err != nil || r.Target != "db:5432" || r.KeyID != "k1" || r.ClientAddr != "192.0.2.9:40000" {
		t.Errorf("session after restart: %+v, %v", r, err)
	}
	if toks, err := s2.ListEnrollmentTokens(ctx); err != nil || len(toks) != 1 || toks[0].ConsumedAt == nil {
		t.Errorf("enrollment tokens after restart: %+v, %v", toks, err)
	}
}
