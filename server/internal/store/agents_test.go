package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// sameAgent compares agents field by field, times with Equal.
func sameAgent(a, b Agent) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Hostname == b.Hostname && a.SPKISHA256 == b.SPKISHA256 &&
		a.CertSerial == b.CertSerial && a.CertNotAfter.Equal(b.CertNotAfter) && a.EnrolledAt.Equal(b.EnrolledAt) &&
		(a.DeletedAt == nil) == (b.DeletedAt == nil) && (a.DeletedAt == nil || a.DeletedAt.Equal(*b.DeletedAt)) &&
		sameRouteSet(a.ApprovedRoutes, b.ApprovedRoutes) && sameRouteSet(a.LastRoutes, b.LastRoutes)
}

// sameRouteSet compares route sets, a nil list equal to an empty one.
func sameRouteSet(a, b RouteSet) bool {
	return slices.Equal(a.Subnets, b.Subnets) && slices.Equal(a.Domains, b.Domains)
}

func testEnrollAndGetAgent(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	req := enrollReq(f.clk, "jti-1", "Build-01", "csr-a")

	res := mustEnroll(t, s, req)
	if res.Replayed {
		t.Error("first enrollment reported as replayed")
	}
	if !bytes.Equal(res.CertPEM, req.CertPEM) {
		t.Error("CertPEM differs from the request's")
	}
	want := req.Agent
	want.EnrolledAt = f.clk.Now().Truncate(time.Millisecond)
	want.CertNotAfter = want.CertNotAfter.Truncate(time.Millisecond)
	if !sameAgent(res.Agent, want) {
		t.Errorf("result agent %+v, want %+v", res.Agent, want)
	}
	got, err := s.GetAgent(ctx, req.Agent.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !sameAgent(got, want) {
		t.Errorf("GetAgent %+v, want %+v", got, want)
	}
	if _, err := s.GetAgent(ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown agent: %v, want ErrNotFound", err)
	}
}

func testEnrollIdempotentRetry(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	req := enrollReq(f.clk, "jti-1", "agent", "csr-a")
	first := mustEnroll(t, s, req)

	// A retry of the same request (same jti, same CSR), even carrying a
	// freshly generated agent id, gets the stored answer.
	f.clk.Advance(time.Minute)
	retry := req
	retry.Agent.ID = uuid.NewString()
	retry.CertPEM = []byte("a different certificate the caller signed again")
	second := mustEnroll(t, s, retry)
	if !second.Replayed {
		t.Error("retry not reported as replayed")
	}
	if !sameAgent(second.Agent, first.Agent) || !bytes.Equal(second.CertPEM, first.CertPEM) {
		t.Errorf("retry answered %+v, want the first answer %+v", second, first)
	}
	if _, err := s.GetAgent(ctxT(t), retry.Agent.ID); !errors.Is(err, ErrNotFound) {
		t.Error("a retry stored a second agent")
	}
	// The replay shows the agent as it is now (e.g. after a renewal).
	notAfter := f.clk.Now().Add(60 * 24 * time.Hour)
	if err := s.UpdateAgentCert(ctxT(t), first.Agent.ID, "spki-new", "serial-new", notAfter); err != nil {
		t.Fatal(err)
	}
	third := mustEnroll(t, s, req)
	if third.Agent.SPKISHA256 != "spki-new" || !bytes.Equal(third.CertPEM, first.CertPEM) {
		t.Errorf("replay after renewal: %+v", third)
	}
}

func testEnrollTokenUsedWithOtherCSR(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	mustEnroll(t, s, enrollReq(f.clk, "jti-1", "a", "csr-a"))
	_, err := s.EnrollAgent(ctxT(t), enrollReq(f.clk, "jti-1", "b", "csr-b"))
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("got %v, want ErrTokenUsed", err)
	}
	if agents, _ := s.ListAgents(ctxT(t), ListAgentsOptions{}); len(agents) != 1 {
		t.Errorf("%d agents, want 1", len(agents))
	}
}

func testEnrollNameTakenRollsBack(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	mustEnroll(t, s, enrollReq(f.clk, "jti-1", "Build-01", "csr-a"))

	for _, name := range []string{"Build-01", "build-01", "BUILD-01"} {
		_, err := s.EnrollAgent(ctx, enrollReq(f.clk, "jti-2", name, "csr-b"))
		if !errors.Is(err, ErrNameTaken) {
			t.Fatalf("name %q: %v, want ErrNameTaken", name, err)
		}
	}
	// jti-2 was not consumed: it still works with a free name, even with
	// another CSR than the failed attempts.
	res := mustEnroll(t, s, enrollReq(f.clk, "jti-2", "build-02", "csr-c"))
	if res.Replayed {
		t.Error("enrollment after a refused one reported as replayed")
	}
}

func testEnrollDeletedNameReusable(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	old := mustEnroll(t, s, enrollReq(f.clk, "jti-1", "db-proxy", "csr-a"))
	if err := s.DeleteAgent(ctx, old.Agent.ID); err != nil {
		t.Fatal(err)
	}
	mustEnroll(t, s, enrollReq(f.clk, "jti-2", "DB-Proxy", "csr-b"))
	// Replaying the deleted agent's enrollment does not resurrect it.
	replay := enrollReq(f.clk, "jti-1", "db-proxy", "csr-a")
	if _, err := s.EnrollAgent(ctx, replay); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("replay for a deleted agent: %v, want ErrTokenUsed", err)
	}
}

func testEnrollDuplicateAgentID(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	first := mustEnroll(t, s, enrollReq(f.clk, "jti-1", "a", "csr-a"))
	dup := enrollReq(f.clk, "jti-2", "b", "csr-b")
	dup.Agent.ID = first.Agent.ID
	if _, err := s.EnrollAgent(ctxT(t), dup); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate id: %v, want ErrConflict", err)
	}
	mustEnroll(t, s, enrollReq(f.clk, "jti-2", "b", "csr-b")) // jti-2 not consumed
}

func testEnrollInvalid(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	mutations := map[string]func(*EnrollRequest){
		"no jti":         func(r *EnrollRequest) { r.JTI = "" },
		"no expiry":      func(r *EnrollRequest) { r.TokenExpiresAt = time.Time{} },
		"no csr hash":    func(r *EnrollRequest) { r.CSRSHA256 = "" },
		"no cert":        func(r *EnrollRequest) { r.CertPEM = nil },
		"no name":        func(r *EnrollRequest) { r.Agent.Name = "" },
		"no spki":        func(r *EnrollRequest) { r.Agent.SPKISHA256 = "" },
		"no id":          func(r *EnrollRequest) { r.Agent.ID = "" },
		"id not a uuid":  func(r *EnrollRequest) { r.Agent.ID = "agent-1" },
		"uppercase id":   func(r *EnrollRequest) { r.Agent.ID = "0A1B2C3D-4E5F-4A6B-8C7D-8E9FA0B1C2D3" },
		"id with braces": func(r *EnrollRequest) { r.Agent.ID = "{" + uuid.NewString() + "}" },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			req := enrollReq(f.clk, "jti", "a", "csr")
			mutate(&req)
			if _, err := s.EnrollAgent(ctxT(t), req); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// TestEnrollConcurrentSameJTI: ten enrollments race with one token and
// different CSRs; exactly one wins.
func testEnrollConcurrentSameJTI(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		req := enrollReq(f.clk, "shared-jti", fmt.Sprintf("agent-%d", i), fmt.Sprintf("csr-%d", i))
		wg.Go(func() {
			<-start
			_, errs[i] = s.EnrollAgent(t.Context(), req)
		})
	}
	close(start)
	wg.Wait()
	exactlyOne(t, "enrollments", errs, ErrTokenUsed)
	if agents, _ := s.ListAgents(ctxT(t), ListAgentsOptions{IncludeDeleted: true}); len(agents) != 1 {
		t.Errorf("%d agents stored, want 1", len(agents))
	}
}

// TestEnrollConcurrentRetries: ten identical requests race; one enrolls and
// the others get the same answer.
func testEnrollConcurrentRetries(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	const n = 10
	req := enrollReq(f.clk, "jti", "agent", "csr")
	results := make([]EnrollResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = s.EnrollAgent(t.Context(), req) })
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !results[i].Replayed {
			fresh++
		}
		if results[i].Agent.ID != req.Agent.ID || !bytes.Equal(results[i].CertPEM, req.CertPEM) {
			t.Errorf("goroutine %d got another answer: %+v", i, results[i])
		}
	}
	if fresh != 1 {
		t.Errorf("%d non-replayed results, want 1", fresh)
	}
}

// TestEnrollConcurrentSameName: ten tokens race for one name; one wins, the
// others keep their tokens.
func testEnrollConcurrentSameName(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		req := enrollReq(f.clk, fmt.Sprintf("jti-%d", i), "Same-Name", fmt.Sprintf("csr-%d", i))
		wg.Go(func() { _, errs[i] = s.EnrollAgent(t.Context(), req) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("goroutines %d and %d both enrolled the name", winner, i)
			}
			winner = i
		case !errors.Is(err, ErrNameTaken):
			t.Errorf("goroutine %d: %v, want ErrNameTaken", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no enrollment succeeded")
	}
	for i := range n {
		if i == winner {
			continue
		}
		mustEnroll(t, s, enrollReq(f.clk, fmt.Sprintf("jti-%d", i), fmt.Sprintf("other-%d", i), "csr-x"))
	}
}

// testEnrollAcrossProcesses uses two independent stores on one database,
// as the gateway and the offline admin commands (or two replicas) would:
// ten enrollments race for one token, then ten tokens race for one name.
func testEnrollAcrossProcesses(t *testing.T, f *fixture) {
	s1, _ := f.open(t)
	s2, _ := f.open(t)
	const n = 10
	race := func(req func(i int) EnrollRequest) []error {
		errs := make([]error, n)
		concurrently(n, []*sqlStore{s1, s2}, func(i int, s *sqlStore) { _, errs[i] = s.EnrollAgent(t.Context(), req(i)) })
		return errs
	}
	exactlyOne(t, "enrollments with one token across two stores", race(func(i int) EnrollRequest {
		return enrollReq(f.clk, "shared-jti", fmt.Sprintf("agent-%d", i), fmt.Sprintf("csr-%d", i))
	}), ErrTokenUsed)
	exactlyOne(t, "enrollments of one name across two stores", race(func(i int) EnrollRequest {
		return enrollReq(f.clk, fmt.Sprintf("jti-%d", i), fmt.Sprintf("Shared-%c", "nN"[i%2]), fmt.Sprintf("csr-%d", i))
	}), ErrNameTaken)
}

func testListAgentsPagination(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	var ids []string
	for i := range 7 {
		res := mustEnroll(t, s, enrollReq(f.clk, fmt.Sprintf("jti-%d", i), fmt.Sprintf("agent-%d", i), "csr"))
		ids = append(ids, res.Agent.ID)
	}
	sort.Strings(ids)
	if err := s.DeleteAgent(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	live := slices.Delete(slices.Clone(ids), 2, 3)

	collect := func(opts ListAgentsOptions) []string {
		t.Helper()
		var got []string
		for {
			page, err := s.ListAgents(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > opts.Limit {
				t.Fatalf("page of %d, limit %d", len(page), opts.Limit)
			}
			for _, a := range page {
				got = append(got, a.ID)
			}
			if len(page) < opts.Limit {
				return got
			}
			opts.AfterID = page[len(page)-1].ID
		}
	}
	if got := collect(ListAgentsOptions{Limit: 2}); !slices.Equal(got, live) {
		t.Errorf("live agents %v, want %v", got, live)
	}
	if got := collect(ListAgentsOptions{Limit: 3, IncludeDeleted: true}); !slices.Equal(got, ids) {
		t.Errorf("all agents %v, want %v", got, ids)
	}
	all, err := s.ListAgents(ctx, ListAgentsOptions{IncludeDeleted: true})
	if err != nil || len(all) != 7 {
		t.Fatalf("default limit: %d agents, %v", len(all), err)
	}
	if all[2].DeletedAt == nil || all[3].DeletedAt != nil {
		t.Error("DeletedAt not reported in the list")
	}
	page, err := s.ListAgents(ctx, ListAgentsOptions{AfterID: ids[6]})
	if err != nil || page == nil || len(page) != 0 {
		t.Errorf("after the last id: %v, %v (want an empty, non-nil slice)", page, err)
	}
	for i := range DefaultListLimit + 5 {
		mustEnroll(t, s, enrollReq(f.clk, fmt.Sprintf("bulk-%d", i), fmt.Sprintf("bulk-%d", i), "csr"))
	}
	if page, _ := s.ListAgents(ctx, ListAgentsOptions{}); len(page) != DefaultListLimit {
		t.Errorf("zero limit returned %d, want %d", len(page), DefaultListLimit)
	}
}

func testDeleteAgent(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	a := mustEnroll(t, s, enrollReq(f.clk, "jti", "a", "csr")).Agent
	f.clk.Advance(time.Hour)
	deletedAt := f.clk.Now()
	if err := s.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, a.ID)
	if err != nil {
		t.Fatalf("GetAgent of a deleted agent: %v (it must still be returned)", err)
	}
	if got.DeletedAt == nil || !got.DeletedAt.Equal(deletedAt.Truncate(time.Millisecond)) {
		t.Errorf("DeletedAt %v, want %v", got.DeletedAt, deletedAt)
	}
	if err := s.DeleteAgent(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteAgent(ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete unknown: %v, want ErrNotFound", err)
	}
}

func testUpdateAgentCert(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	a := mustEnroll(t, s, enrollReq(f.clk, "jti", "a", "csr")).Agent
	notAfter := f.clk.Now().Add(45 * 24 * time.Hour)
	if err := s.UpdateAgentCert(ctx, a.ID, "spki-2", "serial-2", notAfter); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SPKISHA256 != "spki-2" || got.CertSerial != "serial-2" || !got.CertNotAfter.Equal(notAfter.Truncate(time.Millisecond)) {
		t.Errorf("after update: %+v", got)
	}
	if got.Name != a.Name || !got.EnrolledAt.Equal(a.EnrolledAt) {
		t.Error("update changed other fields")
	}
	if err := s.UpdateAgentCert(ctx, uuid.NewString(), "x", "y", notAfter); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown agent: %v, want ErrNotFound", err)
	}
	if err := s.UpdateAgentCert(ctx, a.ID, "", "y", notAfter); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty spki: %v, want ErrInvalid", err)
	}
	if err := s.DeleteAgent(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateAgentCert(ctx, a.ID, "spki-3", "serial-3", notAfter); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted agent: %v, want ErrNotFound", err)
	}
}

func testEnrollmentTokens(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	exp := f.clk.Now().Add(time.Hour)
	if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: "t1", AgentName: "a", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Second)
	if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: "t2", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{JTI: "t1", ExpiresAt: exp}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate jti: %v, want ErrConflict", err)
	}
	if err := s.RecordEnrollmentToken(ctx, EnrollmentToken{ExpiresAt: exp}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no jti: %v, want ErrInvalid", err)
	}
	a := mustEnroll(t, s, enrollReq(f.clk, "t2", "b", "csr")).Agent
	// A jti never recorded (an external provisioner's) is consumable too.
	mustEnroll(t, s, enrollReq(f.clk, "provisioner-jti", "c", "csr"))

	toks, err := s.ListEnrollmentTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks[0].JTI != "t1" || toks[1].JTI != "t2" {
		t.Fatalf("tokens %+v", toks)
	}
	if toks[0].ConsumedAt != nil || toks[0].AgentID != "" || toks[0].AgentName != "a" || !toks[0].ExpiresAt.Equal(exp.Truncate(time.Millisecond)) {
		t.Errorf("unused token %+v", toks[0])
	}
	if toks[1].ConsumedAt == nil || toks[1].AgentID != a.ID {
		t.Errorf("used token %+v, want consumed by %s", toks[1], a.ID)
	}
}

// GoneAgents names the deleted and unknown ids among many (more than one
// query's worth), each once, in order.
func testGoneAgents(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)
	live := mustEnroll(t, s, enrollReq(f.clk, "j1", "live", "c1")).Agent
	deleted := mustEnroll(t, s, enrollReq(f.clk, "j2", "deleted", "c2")).Agent
	if err := s.DeleteAgent(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if gone, err := s.GoneAgents(ctx, nil); err != nil || len(gone) != 0 {
		t.Errorf("GoneAgents(nil) = %v, %v", gone, err)
	}
	ids := []string{live.ID, deleted.ID, deleted.ID}
	want := []string{deleted.ID}
	for range maxIDsPerQuery + 10 {
		u := uuid.NewString()
		ids = append(ids, u, live.ID)
		want = append(want, u)
	}
	slices.Sort(want)
	gone, err := s.GoneAgents(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gone, want) {
		t.Errorf("GoneAgents: %d ids, want %d (the deleted one and the unknown ones)", len(gone), len(want))
	}
}
