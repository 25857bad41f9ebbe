package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
)

type fixture struct {
	path string
	clk  *fakeclock.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{path: filepath.Join(t.TempDir(), "outpost.db"), clk: fakeclock.New(time.Date(2031, 3, 4, 5, 6, 7, 890_123_456, time.UTC))}
}

// open opens the fixture's database and closes it at cleanup; logs go to
// the returned buffer.
func (f *fixture) open(t *testing.T) (*SQLite, *testlog.Writer) {
	t.Helper()
	logs := testlog.New(t)
	log := hclog.New(&hclog.LoggerOptions{Name: "store", Level: hclog.Debug, Output: logs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenSQLite(ctx, f.path, Config{Now: f.clk.Now, Logger: log})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

func openStore(t *testing.T) (*SQLite, *fixture) {
	t.Helper()
	f := newFixture(t)
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
