package store

import (
	"errors"
	"testing"

	"github.com/google/uuid"
)

// Approved routes are stored at enrollment; both route sets are replaced
// by their setters, read back by GetAgent and ListAgents, and survive a
// restart; nil lists read back empty.
func testAgentRoutes(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	req := enrollReq(f.clk, "jti", "a", "csr")
	a := mustEnroll(t, s, req).Agent
	if !sameRouteSet(a.ApprovedRoutes, req.Agent.ApprovedRoutes) || a.LastRoutes.Subnets == nil || len(a.LastRoutes.Subnets) != 0 {
		t.Fatalf("enrolled agent routes: approved %+v, last %+v", a.ApprovedRoutes, a.LastRoutes)
	}
	approved := RouteSet{Subnets: []string{"10.1.0.0/16"}, Domains: []string{"*.corp.example"}}
	last := RouteSet{Subnets: []string{"10.1.2.3/24", "192.0.2.0/24"}, Domains: []string{"db.corp.example"}}
	if err := s.SetApprovedRoutes(ctx, a.ID, approved); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLastRoutes(ctx, a.ID, last); err != nil {
		t.Fatal(err)
	}
	check := func(s *sqlStore, when string) {
		t.Helper()
		got, err := s.GetAgent(ctx, a.ID)
		if err != nil || !sameRouteSet(got.ApprovedRoutes, approved) || !sameRouteSet(got.LastRoutes, last) {
			t.Fatalf("%s: GetAgent routes %+v / %+v, %v", when, got.ApprovedRoutes, got.LastRoutes, err)
		}
		list, err := s.ListAgents(ctx, ListAgentsOptions{})
		if err != nil || len(list) != 1 || !sameRouteSet(list[0].ApprovedRoutes, approved) || !sameRouteSet(list[0].LastRoutes, last) {
			t.Fatalf("%s: ListAgents %+v, %v", when, list, err)
		}
	}
	check(s, "after the setters")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := f.open(t)
	check(s2, "after a restart")

	if err := s2.SetApprovedRoutes(ctx, a.ID, RouteSet{}); err != nil {
		t.Fatal(err)
	}
	got, err := s2.GetAgent(ctx, a.ID)
	if err != nil || got.ApprovedRoutes.Subnets == nil || got.ApprovedRoutes.Domains == nil || len(got.ApprovedRoutes.Subnets)+len(got.ApprovedRoutes.Domains) != 0 {
		t.Fatalf("empty approved routes read back as %+v, %v", got.ApprovedRoutes, err)
	}
}

// The setters refuse an unknown or deleted agent with ErrNotFound.
func testAgentRoutesNeedALiveAgent(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	a := mustEnroll(t, s, enrollReq(f.clk, "jti", "a", "csr")).Agent
	if err := s.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a.ID, uuid.NewString()} {
		if err := s.SetApprovedRoutes(ctx, id, RouteSet{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetApprovedRoutes(%s): %v, want ErrNotFound", id, err)
		}
		if err := s.SetLastRoutes(ctx, id, RouteSet{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetLastRoutes(%s): %v, want ErrNotFound", id, err)
		}
	}
}

// A database created at schema version 1 migrates: its agents start with
// no approved and no last routes.
func testMigrationAddsEmptyRoutes(t *testing.T, f *fixture) {
	ctx := ctxT(t)
	db := f.raw(t)
	ms, err := loadMigrations(migrationFiles, f.b.name)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	for _, q := range []string{
		ms[0].sql,
		`CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)`,
		`INSERT INTO agents (id, name, name_key, hostname, spki_sha256, cert_serial, cert_not_after, enrolled_at)
VALUES ('` + id + `', 'old', 'old', '', 'spki', 'serial', 0, 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := f.open(t)
	a, err := s.GetAgent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a.ApprovedRoutes.Subnets == nil || len(a.ApprovedRoutes.Subnets)+len(a.ApprovedRoutes.Domains)+len(a.LastRoutes.Subnets)+len(a.LastRoutes.Domains) != 0 {
		t.Fatalf("migrated agent routes: approved %+v, last %+v", a.ApprovedRoutes, a.LastRoutes)
	}
}
