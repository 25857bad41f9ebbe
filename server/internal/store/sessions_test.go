package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func testListSessions(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	base := f.clk.Now().Truncate(time.Millisecond)
	// s0..s6, one second apart, s3 and s4 at the same instant (the id
	// breaks the tie); odd ones through agent-a, the last one still open.
	at := []time.Duration{0, 1, 2, 3, 3, 4, 5}
	for i, d := range at {
		r := SessionRecord{ID: fmt.Sprintf("s%d", i), Target: "db:5432", AgentID: "agent-b", StartedAt: base.Add(d * time.Second)}
		if i%2 == 1 {
			r.AgentID, r.Target = "agent-a", "web:443"
		}
		if err := s.InsertSession(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i < len(at)-1 {
			outcome := "closed"
			if i == 2 {
				outcome = "refused"
			}
			if err := s.FinishSession(ctx, r.ID, r.StartedAt.Add(time.Second), int64(i), int64(10*i), outcome, "why"); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := func(rs []SessionRecord) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return fmt.Sprint(out)
	}
	// Every page of two, newest first, ties by id descending.
	var all []SessionRecord
	var after *SessionCursor
	for range 10 {
		page, err := s.ListSessions(ctx, ListSessionsOptions{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if len(page) < 2 {
			break
		}
		last := page[len(page)-1]
		after = &SessionCursor{StartedAt: last.StartedAt, ID: last.ID}
	}
	if got := ids(all); got != "[s6 s5 s4 s3 s2 s1 s0]" {
		t.Errorf("paged: %s", got)
	}
	if all[0].Outcome != "" || !all[0].EndedAt.IsZero() || all[1].BytesDown != 50 || all[1].Outcome != "closed" || all[1].EndedAt.IsZero() {
		t.Errorf("records: %+v, %+v", all[0], all[1])
	}
	for _, c := range []struct {
		name string
		opts ListSessionsOptions
		want string
	}{
		{"agent", ListSessionsOptions{AgentID: "agent-a"}, "[s5 s3 s1]"},
		{"target", ListSessionsOptions{Target: "db:5432"}, "[s6 s4 s2 s0]"},
		{"outcome", ListSessionsOptions{Outcome: "refused"}, "[s2]"},
		{"open", ListSessionsOptions{OpenOnly: true}, "[s6]"},
		{"from", ListSessionsOptions{From: base.Add(4 * time.Second)}, "[s6 s5]"},
		{"until", ListSessionsOptions{Until: base.Add(3 * time.Second)}, "[s2 s1 s0]"},
		{"window and agent", ListSessionsOptions{AgentID: "agent-b", From: base.Add(time.Second), Until: base.Add(5 * time.Second)}, "[s4 s2]"},
		{"after a tie", ListSessionsOptions{After: &SessionCursor{StartedAt: base.Add(3 * time.Second), ID: "s4"}, Limit: 2}, "[s3 s2]"},
		{"none", ListSessionsOptions{AgentID: "nobody"}, "[]"},
	} {
		got, err := s.ListSessions(ctx, c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ids(got) != c.want {
			t.Errorf("%s: %s, want %s", c.name, ids(got), c.want)
		}
	}
	if got, err := s.ListSessions(ctx, ListSessionsOptions{}); err != nil || got == nil || len(got) != len(at) {
		t.Errorf("default limit: %d rows, %v", len(got), err)
	}
}

func testSessions(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	started := f.clk.Now()
	rec := SessionRecord{ID: "sess-1", Target: "10.0.0.5:22", AgentID: "agent-1", Decision: "subnet 10.0.0.0/24 via agent-1",
		KeyID: "key-1", ClientAddr: "[2001:db8::7]:51234"}
	if err := s.InsertSession(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "sess-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Target != rec.Target || got.AgentID != rec.AgentID || got.Decision != rec.Decision ||
		got.KeyID != rec.KeyID || got.ClientAddr != rec.ClientAddr ||
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
		got.Outcome != "ok" || got.Reason != "client closed" || got.KeyID != "key-1" || got.ClientAddr != rec.ClientAddr {
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
	if got.AgentID != "" || got.KeyID != "" || got.ClientAddr != "" || !got.StartedAt.Equal(direct.StartedAt.Truncate(time.Millisecond)) ||
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

func testUseSessionToken(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	exp := f.clk.Now().Add(time.Minute)
	// Single-use: a limit of one.
	if n, err := s.UseSessionToken(ctx, "jti-1", exp, 1); n != 1 || err != nil {
		t.Fatalf("first use: %d, %v", n, err)
	}
	if _, err := s.UseSessionToken(ctx, "jti-1", exp, 1); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use: %v, want ErrTokenUsed", err)
	}
	if _, err := s.UseSessionToken(ctx, "jti-2", exp, 1); err != nil {
		t.Errorf("another jti: %v", err)
	}
	// Reusable: counted up to its limit, and a refused use changes nothing.
	for want := int64(1); want <= 3; want++ {
		if n, err := s.UseSessionToken(ctx, "reuse", exp, 3); n != want || err != nil {
			t.Fatalf("use %d: %d, %v", want, n, err)
		}
	}
	for range 2 {
		if n, err := s.UseSessionToken(ctx, "reuse", exp, 3); !errors.Is(err, ErrTokenUsed) || n != 0 {
			t.Fatalf("use past the limit: %d, %v; want ErrTokenUsed", n, err)
		}
	}
	var uses int64
	if err := s.db.QueryRowContext(ctx, `SELECT uses FROM session_token_uses WHERE jti = 'reuse'`).Scan(&uses); err != nil || uses != 3 {
		t.Errorf("stored count %d (%v), want 3", uses, err)
	}
	// A larger limit (a gateway configured for more) lets it go on.
	if n, err := s.UseSessionToken(ctx, "reuse", exp, 4); n != 4 || err != nil {
		t.Errorf("use under a raised limit: %d, %v", n, err)
	}

	for _, bad := range []struct {
		jti string
		exp time.Time
		max int64
	}{{"", exp, 1}, {"jti-3", time.Time{}, 1}, {"jti-3", exp, 0}, {"jti-3", exp, -1}} {
		if _, err := s.UseSessionToken(ctx, bad.jti, bad.exp, bad.max); !errors.Is(err, ErrInvalid) {
			t.Errorf("UseSessionToken(%q, %v, %d): %v, want ErrInvalid", bad.jti, bad.exp, bad.max, err)
		}
	}
}

func testUseSessionTokenConcurrent(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = s.UseSessionToken(t.Context(), "jti", f.clk.Now().Add(time.Minute), 1) })
	}
	wg.Wait()
	exactlyOne(t, "consumptions", errs, ErrTokenUsed)
}

// N concurrent uses of a token limited to max, spread over two handles on
// the same file as two gateway processes would be (each with its own
// connection pool and write queue): exactly max succeed, and the counts
// they got are 1..max, each once.
func testUseSessionTokenLimitAcrossHandles(t *testing.T, f *fixture) {
	a, _ := f.open(t)
	b, _ := f.open(t)
	const n, max = 40, 7
	exp := f.clk.Now().Add(time.Minute)
	counts := make([]int64, n)
	errs := make([]error, n)
	concurrently(n, []*sqlStore{a, b}, func(i int, s *sqlStore) {
		counts[i], errs[i] = s.UseSessionToken(t.Context(), "shared", exp, max)
	})
	seen := map[int64]bool{}
	for i, err := range errs {
		switch {
		case err == nil:
			if counts[i] < 1 || counts[i] > max || seen[counts[i]] {
				t.Errorf("use %d got count %d (seen before: %v)", i, counts[i], seen[counts[i]])
			}
			seen[counts[i]] = true
		case !errors.Is(err, ErrTokenUsed):
			t.Errorf("use %d: %v", i, err)
		}
	}
	if len(seen) != max {
		t.Fatalf("%d uses succeeded, want exactly %d", len(seen), max)
	}
}

func testPruneExpired(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	now := f.clk.Now()

	// Expired before now: session token, consumed and recorded enrollment
	// token. Still valid: one of each.
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	for i, exp := range []time.Time{past, future} {
		if _, err := s.UseSessionToken(ctx, fmt.Sprintf("sess-%d", i), exp, 1); err != nil {
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
	if _, err := s.UseSessionToken(ctx, "sess-edge", now, 1); err != nil {
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

	if _, err := s.UseSessionToken(ctx, "sess-0", future, 1); err != nil {
		t.Errorf("pruned session jti not reusable: %v", err)
	}
	for _, jti := range []string{"sess-1", "sess-edge"} {
		if _, err := s.UseSessionToken(ctx, jti, future, 1); !errors.Is(err, ErrTokenUsed) {
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

// A database written by a gateway before migration 0002: its consumed
// single-use tokens stay consumed, and its audit rows read back with no key
// id or client address.
func testSessionTokensMigration(t *testing.T, f *fixture) {
	ctx := ctxT(t)
	ms, err := loadMigrations(migrationFiles, f.b.name)
	if err != nil {
		t.Fatal(err)
	}
	db := f.raw(t)
	exp := f.clk.Now().Add(time.Hour).UnixMilli()
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		ms[0].sql,
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)`,
		fmt.Sprintf(`INSERT INTO consumed_session_tokens (jti, expires_at, consumed_at) VALUES ('old-jti', %d, 0)`, exp),
		`INSERT INTO sessions (id, target, agent_id, decision, started_at, ended_at, bytes_up, bytes_down, outcome, reason)
VALUES ('old-session', 'db:5432', '', 'direct', 0, 1, 2, 3, 'ok', '')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, _ := f.open(t)
	if _, err := s.UseSessionToken(ctx, "old-jti", time.UnixMilli(exp), 1); !errors.Is(err, ErrTokenUsed) {
		t.Errorf("token consumed before the migration: %v, want ErrTokenUsed", err)
	}
	r, err := s.GetSession(ctx, "old-session")
	if err != nil || r.Target != "db:5432" || r.BytesDown != 3 || r.KeyID != "" || r.ClientAddr != "" {
		t.Errorf("old audit row: %+v, %v", r, err)
	}
}
