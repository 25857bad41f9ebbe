package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

func testOpenAppliesMigrationsOnce(t *testing.T, f *fixture) {
	s, logs := f.open(t)
	ctx := ctxT(t)
	if !strings.Contains(logs.String(), "applied schema migration") {
		t.Error("first open did not log the migration")
	}
	ms, err := loadMigrations(migrationFiles, f.b.name)
	if err != nil {
		t.Fatal(err)
	}
	var versions, maxVersion int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&versions, &maxVersion); err != nil {
		t.Fatal(err)
	}
	if versions != len(ms) || maxVersion != len(ms) {
		t.Fatalf("schema_migrations holds %d rows up to %d, want %d", versions, maxVersion, len(ms))
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

// A database migrated by a newer gateway is refused, and the message says
// which versions.
func testOpenRefusesNewerSchema(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	if _, err := s.db.ExecContext(ctxT(t), `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := f.b.open(ctxT(t), f.where, Config{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
	if ms, _ := loadMigrations(migrationFiles, f.b.name); !strings.Contains(err.Error(), fmt.Sprintf("version 9999, this gateway knows up to %d", len(ms))) {
		t.Errorf("message %q does not give the versions", err)
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
			ms, err := loadMigrations(tt.fs, "sqlite")
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (len(ms) != 2 || ms[0].sql != "a" || ms[1].sql != "b") {
				t.Fatalf("migrations %+v not in version order", ms)
			}
		})
	}
}

// A version whose SQL must differ has one file per dialect, side by side;
// each dialect runs its own.
func TestLoadMigrationsPerDialect(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	fsys := fstest.MapFS{
		"migrations/0001_a.sql":          file("shared"),
		"migrations/0002_b.sqlite.sql":   file("for sqlite"),
		"migrations/0002_b.postgres.sql": file("for postgres"),
		"migrations/0003_c.sql":          file("shared again"),
	}
	for _, d := range dialectNames {
		ms, err := loadMigrations(fsys, d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if len(ms) != 3 || ms[0].sql != "shared" || ms[1].sql != "for "+d || ms[1].name != "0002_b."+d+".sql" || ms[2].sql != "shared again" {
			t.Errorf("%s: %+v", d, ms)
		}
	}
	bad := map[string]fstest.MapFS{
		"one dialect only": {"migrations/0001_a.sqlite.sql": file("x")},
		"shared and dialect": {
			"migrations/0001_a.sql": file("x"), "migrations/0001_a.sqlite.sql": file("x"), "migrations/0001_a.postgres.sql": file("x"),
		},
		"unknown dialect": {"migrations/0001_a.mysql.sql": file("x")},
		"two of a dialect": {
			"migrations/0001_a.sqlite.sql": file("x"), "migrations/0001_b.sqlite.sql": file("x"), "migrations/0001_a.postgres.sql": file("x"),
		},
	}
	for name, fsys := range bad {
		if _, err := loadMigrations(fsys, "sqlite"); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	// The embedded migrations load for every dialect.
	for _, d := range dialectNames {
		if _, err := loadMigrations(migrationFiles, d); err != nil {
			t.Errorf("embedded migrations for %s: %v", d, err)
		}
	}
}
