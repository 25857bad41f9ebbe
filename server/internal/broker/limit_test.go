package broker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/brokertest"
	"github.com/outposthq/outpost/server/internal/store"
)

// memAudit keeps the audit in memory: every record the broker handed it,
// by session id. It is safe for concurrent use.
type memAudit struct {
	mu   sync.Mutex
	recs map[string][]store.SessionRecord
}

func (a *memAudit) Record(r store.SessionRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.recs == nil {
		a.recs = map[string][]store.SessionRecord{}
	}
	a.recs[r.ID] = append(a.recs[r.ID], r)
}

// get returns the session's latest record.
func (a *memAudit) get(id string) store.SessionRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rs := a.recs[id]; len(rs) > 0 {
		return rs[len(rs)-1]
	}
	return store.SessionRecord{}
}

// all returns every record of the session, in order.
func (a *memAudit) all(id string) []store.SessionRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]store.SessionRecord(nil), a.recs[id]...)
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
	// The open session's start is recorded already, without an end.
	if recs := s.audit.all(id.String()); len(recs) != 1 || !recs[0].EndedAt.IsZero() || recs[0].StartedAt.IsZero() ||
		!strings.HasPrefix(recs[0].Decision, "DECISION_DIRECT: ") || recs[0].Outcome != "" {
		t.Errorf("audit of the open session: %+v", recs)
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
	recs := s.audit.all(id.String())
	if len(recs) != 2 {
		t.Fatalf("%d audit records, want the start and the end: %+v", len(recs), recs)
	}
	if rec := recs[1]; rec.Outcome != "error" || rec.Reason != "shutdown" || rec.EndedAt.Before(rec.StartedAt) ||
		rec.StartedAt != recs[0].StartedAt || rec.Decision != recs[0].Decision {
		t.Errorf("audit %+v", rec)
	}
}

// A session that fails to open is recorded once, ended, with the reason.
func TestSessionFailedRecordedOnce(t *testing.T) {
	s := newSession(t)
	id := dataplane.SessionID{3}
	// Outside the direct allow-list (127.0.0.0/8): refused without a dial.
	s.b.Serve(t.Context(), broker.Request{ID: id, Target: "192.0.2.1:22", KeyID: "key-1"}, s.client)
	recs := s.audit.all(id.String())
	if len(recs) != 1 {
		t.Fatalf("%d audit records, want 1: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Outcome != "connect_failed" || r.EndedAt.IsZero() || r.KeyID != "key-1" ||
		!strings.HasPrefix(r.Decision, "DECISION_REJECTED: ") || r.Reason == "" {
		t.Errorf("audit %+v", r)
	}
}
