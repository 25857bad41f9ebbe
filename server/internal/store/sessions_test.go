package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestSessions(t *testing.T) {
	s, f := openStore(t)
	ctx := ctxT(t)
	started := f.clk.Now()
	rec := SessionRecord{ID: "sess-1", Target: "10.0.0.5:22", AgentID: "agent-1", Decision: "subnet 10.0.0.0/24 via agent-1"}
	if err := s.InsertSession(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "sess-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Target != rec.Target || got.AgentID != rec.AgentID || got.Decision != rec.Decision ||
		!got.StartedAt.Equal(started.Truncate(time.Millisecond)) || !got.EndedAt.IsZero() || got.Outcome != "" {
		t.Errorf("open session %+v", got)
	}
	if err := s.InsertSession(ctx, rec); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate session: %v, want ErrConflict", err)
	}

	end := started.Add(90 * time.Second)
	if err := s.FinishSession(ctx, "sess-1", end, 1234, 56789, "ok", "client closed"); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetSession(ctx, "sess-1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.EndedAt.Equal(end.Truncate(time.Millisecond)) || got.BytesUp != 1234 || got.BytesDown != 56789 ||
		got.Outcome != "ok" || got.Reason != "client closed" {
		t.Errorf("finished session %+v", got)
	}
	if err := s.FinishSession(ctx, "sess-1", end, 1, 1, "error", "again"); !errors.Is(err, ErrConflict) {
		t.Errorf("finish twice: %v, want ErrConflict", err)
	}
	if got2, _ := s.GetSession(ctx, "sess-1"); got2.Outcome != "ok" {
		t.Error("a refused second finish changed the record")
	}
	if err := s.FinishSession(ctx, "nope", end, 0, 0, "ok", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("finish unknown: %v, want ErrNotFound", err)
	}
	if _, err := s.GetSession(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown: %v, want ErrNotFound", err)
	}

	// A direct session with explicit times and no agent; a zero end means now.
	direct := SessionRecord{ID: "sess-2", Target: "example.com:443", Decision: "direct", StartedAt: started.Add(-time.Hour)}
	if err := s.InsertSession(ctx, direct); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute)
	if err := s.FinishSession(ctx, "sess-2", time.Time{}, 0, 0, "refused", "dial: connection refused"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetSession(ctx, "sess-2")
	if got.AgentID != "" || !got.StartedAt.Equal(direct.StartedAt.Truncate(time.Millisecond)) ||
		!got.EndedAt.Equal(f.clk.Now().Truncate(time.Millisecond)) {
		t.Errorf("direct session %+v", got)
	}

	if err := s.InsertSession(ctx, SessionRecord{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no id: %v, want ErrInvalid", err)
	}
	if err := s.InsertSession(ctx, SessionRecord{ID: "x", BytesUp: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative bytes: %v, want ErrInvalid", err)
	}
	if err := s.FinishSession(ctx, "sess-2", end, -1, 0, "", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative bytes on finish: %v, want ErrInvalid", err)
	}
}

func TestConsumeSessionToken(t *testing.T) {
	s, f := openStore(t)
	ctx := ctxT(t)
	exp := f.clk.Now().Add(time.Minute)
	if err := s.ConsumeSessionToken(ctx, "jti-1", exp); err != nil {
		t.Fatal(err)
	}
	if err := s.ConsumeSessionToken(ctx, "jti-1", exp); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use: %v, want ErrTokenUsed", err)
	}
	if err := s.ConsumeSessionToken(ctx, "jti-2", exp); err != nil {
		t.Errorf("another jti: %v", err)
	}
	if err := s.ConsumeSessionToken(ctx, "", exp); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty jti: %v, want ErrInvalid", err)
	}
	if err := s.ConsumeSessionToken(ctx, "jti-3", time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no expiry: %v, want ErrInvalid", err)
	}
}

func TestConsumeSessionTokenConcurrent(t *testing.T) {
	s, f := openStore(t)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.ConsumeSessionToken(t.Context(), "jti", f.clk.Now().Add(time.Minute)) })
	}
	wg.Wait()
	exactlyOne(t, "consumptions", errs, ErrTokenUsed)
}

func TestPruneExpired(t *testing.T) {
	s, f := openStore(t)
	ctx := ctxT(t)
	now := f.clk.Now()

	// Expired before now: session token, consumed and recorded enrollment
	// token. Still valid: one of each.
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	for i, exp := range []time.Time{past, future} {
		if err := s.ConsumeSessionToken(ctx, fmt.Sprintf("sess-%d", i), exp); err != nil {
			t.Fatal(err)
		}
		jti := fmt.Sprintf("enr-%d", i)
		if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: jti, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		req := enrollReq(f.clk, jti, fmt.Sprintf("agent-%d", i), "csr")
		req.TokenExpiresAt = exp
		mustEnroll(t, s, req)
	}
	// A token expiring exactly at the cut-off is kept.
	if err := s.ConsumeSessionToken(ctx, "sess-edge", now); err != nil {
		t.Fatal(err)
	}

	n, err := s.PruneExpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("pruned %d rows, want 3", n)
	}
	if n, err := s.PruneExpired(ctx, now); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v", n, err)
	}

	if err := s.ConsumeSessionToken(ctx, "sess-0", future); err != nil {
		t.Errorf("pruned session jti not reusable: %v", err)
	}
	for _, jti := range []string{"sess-1", "sess-edge"} {
		if err := s.ConsumeSessionToken(ctx, jti, future); !errors.Is(err, ErrTokenUsed) {
			t.Errorf("unexpired %s pruned: %v", jti, err)
		}
	}
	if _, err := s.EnrollAgent(ctx, enrollReq(f.clk, "enr-1", "x", "other-csr")); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("unexpired enrollment jti pruned: %v", err)
	}
	toks, err := s.ListEnrollmentTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].JTI != "enr-1" {
		t.Errorf("recorded tokens after prune: %+v, %v", toks, err)
	}
	// Agents are never pruned.
	if agents, _ := s.ListAgents(ctx, ListAgentsOptions{}); len(agents) != 2 {
		t.Errorf("%d agents after prune, want 2", len(agents))
	}
}
