package store

import (
	"context"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

// The SQLite file is owner-only and runs in WAL mode.
func TestSQLiteFileModeAndWAL(t *testing.T) {
	f := newFixture(t, sqliteBackend)
	s, _ := f.open(t)
	var mode string
	if err := s.db.QueryRowContext(ctxT(t), `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q (%v), want wal", mode, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(f.where)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("database file mode %v, want 0600", fi.Mode().Perm())
		}
	}
}

// TestSQLiteEveryConnectionHasPragmas checks the per-connection pragmas on
// several pooled connections, not just the first.
func TestSQLiteEveryConnectionHasPragmas(t *testing.T) {
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
	if got := s.db.Stats().MaxOpenConnections; got != sqliteMaxConns {
		t.Errorf("pool bounded at %d connections, want %d", got, sqliteMaxConns)
	}
}

func TestSQLiteBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b", "file:x.db", t.TempDir() + "/missing-dir/x.db"} {
		if s, err := OpenSQLite(ctxT(t), p, Config{}); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", p)
		}
	}
}

func TestSQLiteWriteHonoursContext(t *testing.T) {
	s, _ := openStore(t)
	// Hold the write slot, then a writer with a short deadline must give up.
	sem := s.d.(*sqliteDialect).writeSem
	sem <- struct{}{}
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	_, err := s.UseSessionToken(ctx, "j", time.Now(), 1)
	<-sem
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	// Nothing was written: the token is still unused.
	if _, err := s.UseSessionToken(ctxT(t), "j", time.Now(), 1); err != nil {
		t.Fatalf("token consumed by the abandoned write: %v", err)
	}
}
