package store

import (
	"context"
	"errors"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestOpenAppliesMigrationsOnce(t *testing.T) {
	f := newFixture(t)
	s, logs := f.open(t)
	ctx := ctxT(t)

	if !strings.Contains(logs.String(), "applied schema migration") {
		t.Error("first open did not log the migration")
	}
	var versions, maxVersion int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&versions, &maxVersion); err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	if versions != len(ms) || maxVersion != len(ms) {
		t.Fatalf("schema_migrations holds %d rows up to %d, want %d", versions, maxVersion, len(ms))
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q (%v), want wal", mode, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("database file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, logs2 := f.open(t)
	if strings.Contains(logs2.String(), "applied schema migration") {
		t.Error("re-open applied a migration again")
	}
	if err := s2.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil || versions != len(ms) {
		t.Errorf("after re-open: %d migration rows (%v)", versions, err)
	}
	if err := s2.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// TestEveryConnectionHasForeignKeys checks the per-connection pragmas on
// several pooled connections, not just the first.
func TestEveryConnectionHasForeignKeys(t *testing.T) {
	s, _ := openStore(t)
	ctx := ctxT(t)
	var conns []interface{ Close() error }
	for range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var fk, busy int
		if err := c.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Errorf("foreign_keys = %d (%v)", fk, err)
		}
		if err := c.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != int(busyTimeout.Milliseconds()) {
			t.Errorf("busy_timeout = %d (%v)", busy, err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	// The foreign key is enforced: a consumed token must name an agent.
	_, err := s.db.ExecContext(ctx, `INSERT INTO consumed_enrollment_tokens (jti, expires_at, csr_sha256, agent_id, cert_pem, consumed_at)
VALUES ('j', 1, 'c', 'no-such-agent', 'p', 1)`)
	if err == nil {
		t.Error("foreign key not enforced")
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	f := newFixture(t)
	s, _ := f.open(t)
	if _, err := s.db.ExecContext(ctxT(t), `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := OpenSQLite(ctxT(t), f.path, Config{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b", "file:x.db", t.TempDir() + "/missing-dir/x.db"} {
		if s, err := OpenSQLite(ctxT(t), p, Config{}); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", p)
		}
	}
}

func TestLoadMigrationsValidates(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name string
		fs   fstest.MapFS
		ok   bool
	}{
		{"ordered", fstest.MapFS{"migrations/0002_b.sql": file("b"), "migrations/0001_a.sql": file("a")}, true},
		{"gap", fstest.MapFS{"migrations/0001_a.sql": file("a"), "migrations/0003_c.sql": file("c")}, false},
		{"duplicate", fstest.MapFS{"migrations/0001_a.sql": file("a"), "migrations/1_b.sql": file("b")}, false},
		{"no version", fstest.MapFS{"migrations/init.sql": file("a")}, false},
		{"zero", fstest.MapFS{"migrations/0000_a.sql": file("a")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := loadMigrations(tt.fs)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (len(ms) != 2 || ms[0].sql != "a" || ms[1].sql != "b") {
				t.Fatalf("migrations %+v not in version order", ms)
			}
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s, _ := openStore(t)
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

func TestWriteHonoursContext(t *testing.T) {
	s, _ := openStore(t)
	// Hold the write slot, then a writer with a short deadline must give up.
	s.writeSem <- struct{}{}
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	_, err := s.UseSessionToken(ctx, "j", time.Now(), 1)
	<-s.writeSem
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	// Nothing was written: the token is still unused.
	if _, err := s.UseSessionToken(ctxT(t), "j", time.Now(), 1); err != nil {
		t.Fatalf("token consumed by the abandoned write: %v", err)
	}
}

// TestRestartLosesNothing writes one of everything, closes, reopens and
// reads it all back.
func TestRestartLosesNothing(t *testing.T) {
	f := newFixture(t)
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
