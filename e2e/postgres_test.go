package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	gw := startGateway(t, dataDir, nil)
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
