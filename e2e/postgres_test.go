package e2e

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, to read the audit
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
)

// outpost runs the outpost binary with args and returns its standard
// output; a failure fails the test.
func outpost(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(outpostBinary(t), args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, testlog.New(t)
	if err := cmd.Run(); err != nil {
		t.Fatalf("outpost %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// A single SQLite gateway moves onto PostgreSQL with export-secrets and
// import-secrets: its enrolled agent, unchanged (same certificate, same
// server pin, same config), connects to the gateway on PostgreSQL and
// carries a session; the admin key and the agent's approved routes came
// along with the store's rows.
func TestPostgresExportImport(t *testing.T) {
	dsn := testpg.DSN(t)
	dataDir := t.TempDir()
	gw := startGateway(t, dataDir, func(c *server.Config) { c.Store, c.SealKeyFile = "", "" }) // SQLite
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	samePorts := func(c *server.Config) {
		c.Listen, c.QUICListen = gw.g.Addr().String(), gw.g.QUICAddr().String()
	}
	caPEM := gw.g.CACertPEM()
	gw.stop()

	keys := t.TempDir()
	sealKey, bundle := filepath.Join(keys, "seal.key"), filepath.Join(keys, "outpost.bundle")
	outpost(t, "gateway", "seal-key", "create", "--out", sealKey)
	out := outpost(t, "gateway", "export-secrets", "--data-dir", dataDir, "--seal-key-file", sealKey, "--out", bundle)
	if !strings.Contains(out, "agents") || !strings.Contains(out, "ca_spki_sha256") {
		t.Errorf("export-secrets says %q", out)
	}
	out = outpost(t, "gateway", "import-secrets", "--store", dsn, "--seal-key-file", sealKey, "--in", bundle)
	if !strings.Contains(out, "Imported") || !strings.Contains(out, "agents                      1 rows") {
		t.Errorf("import-secrets says %q", out)
	}
	// A re-run finds the secrets in place and refuses to import the rows twice.
	cmd := exec.Command(outpostBinary(t), "gateway", "import-secrets", "--store", dsn, "--seal-key-file", sealKey, "--in", bundle)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "--secrets-only") {
		t.Errorf("a second import with rows: %v, %s", err, b)
	}

	// The same data directory (its admin.key), now on PostgreSQL.
	gw2 := startGateway(t, dataDir, func(c *server.Config) {
		samePorts(c)
		c.Store, c.SealKeyFile = dsn, sealKey
	})
	if string(gw2.g.CACertPEM()) != string(caPEM) {
		t.Fatal("the gateway on PostgreSQL has another CA")
	}
	startAgent(t, fastAgent(dir))
	gw2.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
	s, err := gw2.dial(id, tcpServer(t, hasher))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uploadAndHash(t, s, 1<<16)
	if code, body := gw2.restGet("/v1/agents/" + id + "/approved-routes"); code != 200 || !strings.Contains(body, "127.0.0.0/8") {
		t.Errorf("approved routes after the move: %d %s", code, body)
	}
}

// startOnPostgres runs a gateway on the PostgreSQL database dsn, with a
// new seal key.
func startOnPostgres(t *testing.T, dsn string) *gateway {
	t.Helper()
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if _, err := server.CreateSealKeyFile(sealKey); err != nil {
		t.Fatal(err)
	}
	return startGateway(t, t.TempDir(), func(c *server.Config) { c.Store, c.SealKeyFile = dsn, sealKey })
}

// echoLine sends line through s (to an echo target) and reads it back.
func echoLine(t *testing.T, s io.ReadWriter, line string) {
	t.Helper()
	if _, err := io.WriteString(s, line); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != line {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

// enrollWith calls Enroll with the enrollment token tok and a new key.
func enrollWith(t *testing.T, gw *gateway, tok, name string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := newPendingEnrollment(t, tok, name).enroll(ctx, gw.url, gw.g.CACertPEM())
	return err
}

// PostgreSQL stopped under a running gateway: the live agent stays
// connected and a live client session keeps flowing; /readyz says not
// ready and why; what needs the store (an enrollment, an API key, a
// session token) answers Unavailable/503, never a wrong "no"; a known
// agent, restarted, is admitted from the admission cache. PostgreSQL back:
// everything recovers without a restart, and the token refused during the
// outage still works, since nothing was consumed.
func TestPostgresStoreDown(t *testing.T) {
	pg := testpg.NewServer(t)
	dsn := pg.DSN(t)
	gw := startOnPostgres(t, dsn)
	// office carries the client sessions; branch restarts during the outage.
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	branchDir, branch := enrollAgent(t, gw, "branch", loopback, nil)
	ra := startAgent(t, fastAgent(branchDir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	gw.waitStatus(branch, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)
	liveResp := gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: id})
	live, err := openSession(t, liveResp)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echoLine(t, live, "before the outage\n")
	later := gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: id})
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "late"})

	pg.Stop(t)
	echoLine(t, live, "during the outage\n")
	code, body := gw.restGet("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("/readyz with the store down: %d %q, want 503 naming the store", code, body)
	}
	err = enrollWith(t, gw, tok, "late")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "store is unavailable") {
		t.Errorf("Enroll with the store down: %v, want Unavailable saying the store is", err)
	}
	if code, body := gw.restGet("/v1/agents"); code != http.StatusServiceUnavailable {
		t.Errorf("an API call with the store down: %d %s, want 503", code, body)
	}
	if _, err := openSession(t, later); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("a new session with the store down: %v, want 503", err)
	}
	s, err := gw.dial(id, target)
	if err != nil {
		t.Fatalf("the agent is not connected any more: %v", err)
	}
	echoLine(t, s, "through the agent\n")
	s.Close()

	// An agent restarts: admitted from the cache.
	ra.stop()
	startAgent(t, fastAgent(branchDir))
	lcUntil(t, 15*time.Second, "the restarted agent admitted from the cache", func() bool {
		s, err := gw.dial(branch, target)
		if err != nil {
			return false
		}
		s.Close()
		return true
	})
	echoLine(t, live, "still during the outage\n")

	pg.Start(t)
	lcUntil(t, 15*time.Second, "ready again", func() bool { code, _ := gw.restGet("/readyz"); return code == http.StatusOK })
	if err := enrollWith(t, gw, tok, "late"); err != nil {
		t.Errorf("Enroll after the outage, with the token refused during it: %v", err)
	}
	again, err := openSession(t, later)
	if err != nil {
		t.Fatalf("the session token refused during the outage: %v", err)
	}
	echoLine(t, again, "after the outage\n")
	again.Close()
	echoLine(t, live, "the first session, after the outage\n")
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	gw.waitStatus(branch, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)

	// The audit: the live session's start was queued as the store went
	// down (and may have been dropped then), its end once it was back: its
	// row is whole. The stop writes what is queued.
	live.Close()
	gw.stop()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for what, sid := range map[string]string{"the live session": liveResp.GetSessionId(), "the session after the outage": later.GetSessionId()} {
		var (
			tgt, outcome string
			ended        sql.NullInt64
		)
		err := db.QueryRow(`SELECT target, ended_at, outcome FROM sessions WHERE id = $1`, sid).Scan(&tgt, &ended, &outcome)
		if err != nil || tgt != target || !ended.Valid || outcome == "" {
			t.Errorf("audit row of %s: target %q, ended %v, outcome %q, %v", what, tgt, ended, outcome, err)
		}
	}
}
