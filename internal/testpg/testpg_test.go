package testpg

import (
	"context"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// Each test gets its own empty database on the one shared server, and it
// is dropped at the end of the test.
func TestDSN(t *testing.T) {
	Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var names [2]string
	for i := range names {
		t.Run("db", func(t *testing.T) {
			conn, err := pgx.Connect(ctx, DSN(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var tables int
			if err := conn.QueryRow(ctx, `SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).Scan(&names[i], &tables); err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("fresh database has %d tables", tables)
			}
			if _, err := conn.Exec(ctx, `CREATE TABLE t (x INT)`); err != nil {
				t.Fatal(err)
			}
		})
	}
	if names[0] == names[1] {
		t.Fatalf("two tests shared database %q", names[0])
	}
	conn, err := pgx.Connect(ctx, shared.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names[:]).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d test databases not dropped", left)
	}
	var fsync string
	if err := conn.QueryRow(ctx, `SHOW fsync`).Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("fsync = %q (%v), want off", fsync, err)
	}
}

// Without binaries the error says what to install; with them, the newest
// version wins.
func TestBinDir(t *testing.T) {
	root := t.TempDir()
	t.Setenv("PATH", root)
	pattern := filepath.Join(root, "*", "bin")
	_, err := binDir(pattern)
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("binDir without binaries: %v, want the install hint", err)
	}
	for _, v := range []string{"9", "15", "13"} {
		dir := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"initdb", "postgres"} {
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, err := binDir(pattern); err != nil || got != filepath.Join(root, "15", "bin") {
		t.Fatalf("binDir = %q, %v; want version 15's", got, err)
	}
}

// A test's own server stops and starts again with its data: a database
// made before the stop answers after the start, and no connection gets
// through while it is down.
func TestServerStopStart(t *testing.T) {
	srv := NewServer(t)
	dsn := srv.DSN(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	exec := func() error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS kept (x INT)`)
		return err
	}
	if err := exec(); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if err := exec(); err == nil {
		t.Fatal("a connection got through to a stopped server")
	}
	srv.Start(t)
	if err := exec(); err != nil {
		t.Fatalf("after Start: %v", err)
	}
}

// A server with a TCP listener answers DSNs over it, and is started
// through Spawn, again on Start.
func TestServerWithTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	spawned := 0
	srv := NewServerWith(t, Options{ListenAddr: "127.0.0.1", Port: port, TrustNet: "127.0.0.1/32",
		Spawn: func(cmd *osexec.Cmd) error { spawned++; return cmd.Start() }})
	dsn := srv.DSN(t)
	if want := fmt.Sprintf("@127.0.0.1:%d/", port); !strings.Contains(dsn, want) {
		t.Fatalf("DSN %q is not over TCP (%s)", dsn, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ping := func() error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	srv.Start(t)
	if err := ping(); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	if spawned != 2 {
		t.Errorf("Spawn called %d times, want 2 (the start and Start)", spawned)
	}
}
