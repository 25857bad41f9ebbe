package broker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/brokertest"
	"github.com/outposthq/outpost/server/internal/store"
)

// memAudit keeps the audit in memory. It is safe for concurrent use.
type memAudit struct {
	mu   sync.Mutex
	recs map[string]store.SessionRecord
}

func (a *memAudit) InsertSession(_ context.Context, r store.SessionRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.recs == nil {
		a.recs = map[string]store.SessionRecord{}
	}
	a.recs[r.ID] = r
	return nil
}

func (a *memAudit) FinishSession(_ context.Context, id string, _ time.Time, up, down int64, outcome, reason string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.recs[id]
	r.BytesUp, r.BytesDown, r.Outcome, r.Reason = up, down, outcome, reason
	a.recs[id] = r
	return nil
}

func (a *memAudit) get(id string) store.SessionRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recs[id]
}

// pipeClient is a client stream fed by a pipe: the test writes the client's
// bytes, and sees how the stream ended.
type pipeClient struct {
	r *io.PipeReader

	mu     sync.Mutex
	failed string // Fail's reason
	abort  bool   // Abort called
}

func (c *pipeClient) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *pipeClient) Write(p []byte) (int, error) { return len(p), nil }
func (c *pipeClient) CloseWrite() error           { return nil }
func (c *pipeClient) Close() error                { return c.r.Close() }
func (c *pipeClient) Abort(uint64) {
	c.mu.Lock()
	c.abort = true
	c.mu.Unlock()
	c.r.CloseWithError(errors.New("aborted"))
}
func (c *pipeClient) Fail(reason string) {
	c.mu.Lock()
	c.failed = reason
	c.mu.Unlock()
	c.r.CloseWithError(errors.New("failed"))
}

func (c *pipeClient) ending() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed, c.abort
}

// silentTarget is a loopback target that reads what it is sent and never
// answers. got is closed once a byte reached it.
func silentTarget(t *testing.T) (addr string, got <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	addr = brokertest.Target(t, func(c net.Conn) {
		var b [1]byte
		if n, _ := c.Read(b[:]); n > 0 {
			once.Do(func() { close(ch) })
		}
		io.Copy(io.Discard, c)
		c.Close()
	})
	return addr, ch
}

// session is a direct session's parts: the broker, its audit, the target,
// and the client stream with the pipe writing its bytes.
type session struct {
	b      *broker.Broker
	audit  *memAudit
	target string
	client *pipeClient
	pw     *io.PipeWriter
	// got is closed once the client's bytes reached the target.
	got <-chan struct{}
}

func newSession(t *testing.T) *session {
	t.Helper()
	audit := &memAudit{}
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	target, got := silentTarget(t)
	return &session{b: brokertest.Direct(t, audit), audit: audit, target: target, client: &pipeClient{r: pr}, pw: pw, got: got}
}

// A session that reaches its maximum duration is closed with the reason,
// and the audit says so; the key id and client address are recorded.
func TestSessionMaxDuration(t *testing.T) {
	s := newSession(t)
	id := dataplane.SessionID{1}
	start := time.Now()
	s.b.Serve(t.Context(), broker.Request{ID: id, Target: s.target, Client: "127.0.0.1:50000", KeyID: "key-1", MaxDuration: 300 * time.Millisecond}, s.client)
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("session lasted %v with a maximum of 300ms", d)
	}
	if reason, aborted := s.client.ending(); reason != "maximum session duration reached" || aborted {
		t.Errorf("client ended with reason %q (aborted %v), want the maximum duration's reason", reason, aborted)
	}
	rec := s.audit.get(id.String())
	if rec.Outcome != broker.OutcomeMaxDuration || rec.Reason != "maximum session duration reached" ||
		rec.KeyID != "key-1" || rec.ClientAddr != "127.0.0.1:50000" || rec.Target != s.target {
		t.Errorf("audit %+v", rec)
	}
}

// A session cut for another reason (shutdown) is aborted as before, with no
// maximum-duration reason, even when it had a maximum.
func TestSessionCancelledIsNotMaxDuration(t *testing.T) {
	s := newSession(t)
	ctx, cancel := context.WithCancelCause(t.Context())
	id := dataplane.SessionID{2}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.b.Serve(ctx, broker.Request{ID: id, Target: s.target, MaxDuration: time.Hour}, s.client)
	}()
	// Once pw's write reached the target, the session is open; then
	// cancel.
	if _, err := s.pw.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.got:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's byte did not reach the target")
	}
	cancel(errors.New("shutdown"))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if reason, aborted := s.client.ending(); reason != "" || !aborted {
		t.Errorf("client ended with reason %q (aborted %v), want an abort", reason, aborted)
	}
	if rec := s.audit.get(id.String()); rec.Outcome != "error" || rec.Reason != "shutdown" {
		t.Errorf("audit %+v", rec)
	}
}
