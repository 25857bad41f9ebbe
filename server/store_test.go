package server

import (
	"context"
	"os"
	"path/filepath"
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
	newGateway := func() *running {
		g, err := New(Config{DataDir: dir, Store: dsn, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
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
