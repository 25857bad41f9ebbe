package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// backend is one implementation of Store under test.
type backend struct {
	name string
	// newDB makes a fresh, empty database and returns where it is: a
	// file path or a DSN.
	newDB func(t testing.TB) string
	// open opens the store on the database at where.
	open func(ctx context.Context, where string, cfg Config) (*sqlStore, error)
	// driver is the database/sql driver name for raw access to where.
	driver string
}

var (
	sqliteBackend = backend{
		name:  "sqlite",
		newDB: func(t testing.TB) string { return filepath.Join(t.TempDir(), "outpost.db") },
		open: func(ctx context.Context, where string, cfg Config) (*sqlStore, error) {
			return shared(OpenSQLite(ctx, where, cfg))
		},
		driver: "sqlite",
	}
	postgresBackend = backend{
		name:  "postgres",
		newDB: func(t testing.TB) string { return testpg.DSN(t) },
		open: func(ctx context.Context, where string, cfg Config) (*sqlStore, error) {
			return shared(OpenPostgres(ctx, where, cfg))
		},
		driver: "pgx",
	}
)

// shared returns the sqlStore inside a store an Open function returned.
func shared[S interface{ inner() *sqlStore }](s S, err error) (*sqlStore, error) {
	if err != nil {
		return nil, err
	}
	return s.inner(), nil
}

func (s *sqlStore) inner() *sqlStore { return s }

// concurrently runs fn(i, s) for i in [0, n) at once, s taking each of
// stores in turn (as separate gateway processes would), and waits for all.
func concurrently(n int, stores []*sqlStore, fn func(i int, s *sqlStore)) {
	var wg sync.WaitGroup
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() { fn(i, s) })
	}
	wg.Wait()
}

// fixture is one fresh database of a backend and a fake clock.
type fixture struct {
	b     backend
	where string
	clk   *fakeclock.Clock
}

func newFixture(t *testing.T, b backend) *fixture {
	t.Helper()
	return &fixture{b: b, where: b.newDB(t), clk: fakeclock.New(time.Date(2031, 3, 4, 5, 6, 7, 890_123_456, time.UTC))}
}

// open opens the fixture's database and closes it at cleanup; logs go to
// the returned buffer.
func (f *fixture) open(t *testing.T) (*sqlStore, *testlog.Writer) {
	t.Helper()
	logs := testlog.New(t)
	log := hclog.New(&hclog.LoggerOptions{Name: "store", Level: hclog.Debug, Output: logs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := f.b.open(ctx, f.where, Config{Now: f.clk.Now, Logger: log})
	if err != nil {
		t.Fatalf("open %s store: %v", f.b.name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// raw opens a plain database/sql handle on the fixture's database, for
// setting up and inspecting what the store does not expose.
func (f *fixture) raw(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open(f.b.driver, f.where)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openStore(t *testing.T) (*sqlStore, *fixture) {
	t.Helper()
	f := newFixture(t, sqliteBackend)
	s, _ := f.open(t)
	return s, f
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// enrollReq builds a valid EnrollRequest for a new agent.
func enrollReq(clk *fakeclock.Clock, jti, name, csr string) EnrollRequest {
	id := uuid.NewString()
	return EnrollRequest{
		JTI:            jti,
		TokenExpiresAt: clk.Now().Add(time.Hour),
		CSRSHA256:      csr,
		Agent: Agent{
			ID:           id,
			Name:         name,
			Hostname:     name + ".corp.example",
			SPKISHA256:   "spki-" + id,
			CertSerial:   "serial-" + id,
			CertNotAfter: clk.Now().Add(30 * 24 * time.Hour),
			ApprovedRoutes: RouteSet{
				Subnets: []string{"10.0.0.0/24"},
				Domains: []string{name + ".corp.example"},
			},
		},
		CertPEM: []byte(fmt.Sprintf("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n", id)),
	}
}

func mustEnroll(t *testing.T, s Store, req EnrollRequest) EnrollResult {
	t.Helper()
	res, err := s.EnrollAgent(ctxT(t), req)
	if err != nil {
		t.Fatalf("EnrollAgent(%s, %s): %v", req.JTI, req.Agent.Name, err)
	}
	return res
}

// exactlyOne checks the outcome of concurrent attempts of which one only
// may succeed: one nil error, every other one matching lost.
func exactlyOne(t *testing.T, what string, errs []error, lost error) {
	t.Helper()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, lost):
			t.Errorf("attempt %d: %v, want %v", i, err, lost)
		}
	}
	if ok != 1 {
		t.Fatalf("%d %s succeeded, want 1", ok, what)
	}
}
