package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// Rows exported from a SQLite store, through JSON (as in an export
// bundle), import into an empty store of the backend under test and read
// back the same: keys, agents with routes, consumed jtis (a replay still
// answers, a reuse is still refused), session token counts and the audit.
// A second import, into a store no longer empty, changes nothing.
func testImportRows(t *testing.T, f *fixture) {
	src, _ := newFixture(t, sqliteBackend).open(t)
	ctx := ctxT(t)
	if err := src.CreateAPIKey(ctx, APIKey{ID: "k1", Name: "admin", Hash: []byte{1, 2, 3}, Scopes: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	revoked := APIKey{ID: "k2", Name: "old", Hash: []byte{4}, Scopes: []string{"agents.read"}}
	if err := src.CreateAPIKey(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	if err := src.RevokeAPIKey(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if err := src.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: "t1", AgentName: "a", ExpiresAt: f.clk.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	req := enrollReq(f.clk, "t1", "a", "csr1")
	enrolled := mustEnroll(t, src, req)
	if err := src.SetLastRoutes(ctx, enrolled.Agent.ID, RouteSet{Subnets: []string{"10.0.0.0/25"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UseSessionToken(ctx, "s1", f.clk.Now().Add(time.Minute), 1); err != nil {
		t.Fatal(err)
	}
	if err := src.InsertSession(ctx, SessionRecord{ID: "s1", Target: "db:5432", AgentID: enrolled.Agent.ID, KeyID: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := src.FinishSession(ctx, "s1", time.Time{}, 10, 20, "ok", ""); err != nil {
		t.Fatal(err)
	}
	if err := src.CreateSecrets(ctx, []Secret{{Name: "ca.pem", Sealed: []byte{1}}}); err != nil {
		t.Fatal(err)
	}
	rows, err := src.ExportRows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(rows)
	if err != nil {
		t.Fatal(err)
	}
	var back Rows
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&back); err != nil {
		t.Fatal(err)
	}

	dst, _ := f.open(t)
	if err := dst.ImportRows(ctx, back); err != nil {
		t.Fatalf("ImportRows: %v", err)
	}
	wantAgent, _ := src.GetAgent(ctx, enrolled.Agent.ID)
	if a, err := dst.GetAgent(ctx, enrolled.Agent.ID); err != nil || !reflect.DeepEqual(a, wantAgent) {
		t.Errorf("imported agent %+v, %v; want %+v", a, err, wantAgent)
	}
	for _, id := range []string{"k1", "k2"} {
		want, _ := src.GetAPIKey(ctx, id)
		if k, err := dst.GetAPIKey(ctx, id); err != nil || !reflect.DeepEqual(k, want) {
			t.Errorf("imported key %+v, %v; want %+v", k, err, want)
		}
	}
	if res, err := dst.EnrollAgent(ctx, req); err != nil || !res.Replayed {
		t.Errorf("replay of the enrollment after import: %+v, %v", res, err)
	}
	if _, err := dst.EnrollAgent(ctx, enrollReq(f.clk, "t1", "b", "csr2")); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("the consumed jti after import: %v, want ErrTokenUsed", err)
	}
	if _, err := dst.UseSessionToken(ctx, "s1", f.clk.Now(), 1); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("the used session token after import: %v, want ErrTokenUsed", err)
	}
	wantSess, _ := src.GetSession(ctx, "s1")
	if r, err := dst.GetSession(ctx, "s1"); err != nil || !reflect.DeepEqual(r, wantSess) {
		t.Errorf("imported session %+v, %v; want %+v", r, err, wantSess)
	}
	if secs, _ := dst.ListSecrets(ctx); len(secs) != 0 {
		t.Errorf("ImportRows copied secrets: %v", secs)
	}

	if err := dst.ImportRows(ctx, back); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second import: %v, want ErrConflict", err)
	}
	bad := back
	bad.SchemaVersion++
	if err := dst.ImportRows(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("rows of another schema version: %v, want ErrInvalid", err)
	}
}
