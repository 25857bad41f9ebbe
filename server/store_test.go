package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/internal/testtls"
)

// A gateway whose store is PostgreSQL: it enrolls an agent over loopback
// and lists it, keeps it across a restart (without a second admin key),
// writes no SQLite file, and the offline key commands reach the same
// database.
func TestGatewayOnPostgres(t *testing.T) {
	dsn := testpg.DSN(t)
	dir := t.TempDir()
	sealKey := newSealKey(t)
	newGateway := func() *running {
		g, err := New(Config{DataDir: dir, Store: dsn, SealKeyFile: sealKey, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return run(t, g)
	}
	r := newGateway()
	if r.g.FirstAdminKeyFile() == "" {
		t.Fatal("first start on an empty database made no admin key")
	}
	ctx := withKey(context.Background(), adminKey(t, dir))
	enroll := outpostv1.NewEnrollmentServiceClient(r.grpcConn(t))
	tok, err := enroll.CreateEnrollmentToken(ctx, &outpostv1.CreateEnrollmentTokenRequest{AgentName: "pg-agent"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := enrollCall(context.Background(), enroll, tok.Token, &outpostv1.EnrollRequest{
		CsrPem: csrPEM(t, testtls.Key(t), "pg-agent"), AgentName: "pg-agent"})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	listed := func(r *running) {
		t.Helper()
		list, err := outpostv1.NewAgentAdminServiceClient(r.grpcConn(t)).ListAgents(ctx, &outpostv1.ListAgentsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Agents) != 1 || list.Agents[0].AgentId != res.AgentId || list.Agents[0].Name != "pg-agent" {
			t.Fatalf("ListAgents = %v, want the one enrolled agent %s", list.Agents, res.AgentId)
		}
	}
	listed(r)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	r2 := newGateway()
	if f := r2.g.FirstAdminKeyFile(); f != "" {
		t.Errorf("restart made another admin key (%s)", f)
	}
	listed(r2)
	if _, err := os.Stat(filepath.Join(dir, storeFile)); !os.IsNotExist(err) {
		t.Errorf("%s in the data directory: %v", storeFile, err)
	}

	admin, err := OpenKeyAdmin(context.Background(), "", dsn, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	keys, err := admin.List(context.Background())
	if err != nil || len(keys) != 1 || keys[0].Name != "admin" {
		t.Errorf("keys through KeyAdmin: %+v, %v", keys, err)
	}
}

// newSealKey creates a seal key file for a test and returns its path.
func newSealKey(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seal.key")
	if _, err := CreateSealKeyFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startOn runs a gateway on the PostgreSQL database dsn with its own data
// directory and the seal key in keyFile. Every such gateway has the public
// URL of one cluster behind a load balancer: the audience of the
// enrollment tokens they mint.
func startOn(t *testing.T, dsn, keyFile string, hostnames ...string) *running {
	t.Helper()
	g, err := New(Config{DataDir: t.TempDir(), Store: dsn, SealKeyFile: keyFile, Hostnames: hostnames,
		PublicURL: "https://gw.example:7171", Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return run(t, g)
}

// Two gateways on one database, each with its own data directory and host
// name, share the CA, the server key (agents' pin) and the token key, kept
// sealed in the store and in none of their data directories: an
// enrollment token minted by one enrolls at the other.
func TestClusterSecretsShared(t *testing.T) {
	dsn := testpg.DSN(t)
	sealKey := newSealKey(t)
	a := startOn(t, dsn, sealKey, "gw-a.example")
	b := startOn(t, dsn, sealKey, "gw-b.example")
	if !bytes.Equal(a.g.CACertPEM(), b.g.CACertPEM()) {
		t.Fatal("the two gateways have different CAs")
	}
	spkiA, namesA := serverSPKI(t, a.addr, a.pool)
	spkiB, namesB := serverSPKI(t, b.addr, b.pool)
	if spkiA != spkiB {
		t.Error("the two gateways serve different server keys: agents' pins break across them")
	}
	if !slices.Contains(namesA, "gw-a.example") || !slices.Contains(namesB, "gw-b.example") {
		t.Errorf("server names %v and %v, want each gateway's own", namesA, namesB)
	}
	for _, r := range []*running{a, b} {
		for _, f := range []string{"ca.pem", "ca.key", "server.key", "server.pem", "token.key"} {
			if _, err := os.Stat(filepath.Join(r.g.cfg.DataDir, f)); !os.IsNotExist(err) {
				t.Errorf("%s in a data directory of a gateway on PostgreSQL: %v", f, err)
			}
		}
	}

	ctx := withKey(context.Background(), adminKey(t, a.g.cfg.DataDir))
	tok, err := outpostv1.NewEnrollmentServiceClient(a.grpcConn(t)).CreateEnrollmentToken(ctx,
		&outpostv1.CreateEnrollmentTokenRequest{AgentName: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := enrollCall(context.Background(), outpostv1.NewEnrollmentServiceClient(b.grpcConn(t)), tok.Token,
		&outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "shared"), AgentName: "shared"})
	if err != nil {
		t.Fatalf("a token minted by gateway A, enrolled at gateway B: %v", err)
	}
	if res.ServerSpkiSha256 != spkiA {
		t.Errorf("enrollment pins server key %s, the gateways serve %s", res.ServerSpkiSha256, spkiA)
	}
}

// A gateway given another seal key than the one that sealed the store's
// secrets refuses to start, saying so; a PostgreSQL store without a seal
// key, a seal key with SQLite, and a data directory holding a CA of its
// own on a store without secrets are refused too.
func TestClusterSecretsRefused(t *testing.T) {
	dsn := testpg.DSN(t)
	startOn(t, dsn, newSealKey(t))

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"wrong seal key", Config{Store: dsn, SealKeyFile: newSealKey(t)},
			[]string{"wrong seal key", "is not the one the secrets were sealed with", "same seal key file"}},
		{"no seal key", Config{Store: dsn},
			[]string{"seal_key_file (--seal-key-file) is required with a PostgreSQL store", "seal-key create"}},
		{"seal key with SQLite", Config{SealKeyFile: newSealKey(t)},
			[]string{"applies to a PostgreSQL store only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DataDir, cfg.Listen, cfg.QUICListen = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
			g, err := New(cfg, testLogger(t))
			if err == nil {
				g.Close()
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	// A SQLite gateway's data directory, moved onto an empty database.
	dir := t.TempDir()
	sqliteGW, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t, sqliteGW).stop(); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{DataDir: dir, Store: testpg.DSN(t), SealKeyFile: newSealKey(t), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "export-secrets") {
		t.Fatalf("a data directory with its own CA on an empty database: %v, want refused with the way to move it", err)
	}
}

// A database that cannot be reached fails New with an error that names
// it, and nothing panics on the way out (the gateway's Close must not see
// a nil store in an interface).
func TestUnreachableStore(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), Store: "postgres://outpost@127.0.0.1:1/outpost?connect_timeout=2",
		SealKeyFile: newSealKey(t), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("New on an unreachable database: %v, want an error naming it", err)
	}
}
