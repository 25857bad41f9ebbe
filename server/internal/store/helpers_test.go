package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
)

// testClock is a settable clock, safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2031, 3, 4, 5, 6, 7, 890_123_456, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects log lines and forwards them to t.Logf.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fixture struct {
	path string
	clk  *testClock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{path: filepath.Join(t.TempDir(), "outpost.db"), clk: newClock()}
}

// open opens the fixture's database and closes it at cleanup; logs go to
// the returned buffer.
func (f *fixture) open(t *testing.T) (*SQLite, *logBuffer) {
	t.Helper()
	logs := &logBuffer{t: t}
	log := hclog.New(&hclog.LoggerOptions{Name: "store", Level: hclog.Debug, Output: logs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenSQLite(ctx, f.path, Options{Now: f.clk.Now, Logger: log})
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
func enrollReq(clk *testClock, jti, name, csr string) EnrollRequest {
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
