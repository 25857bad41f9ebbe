package approval

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// memStore is an in-memory Store.
type memStore struct {
	mu     sync.Mutex
	agents map[string]store.Agent
	writes int
}

func newMemStore(agents ...store.Agent) *memStore {
	m := &memStore{agents: make(map[string]store.Agent)}
	for _, a := range agents {
		m.agents[a.ID] = a
	}
	return m
}

func (m *memStore) GetAgent(_ context.Context, id string) (store.Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok {
		return store.Agent{}, store.ErrNotFound
	}
	return a, nil
}

func (m *memStore) ListAgents(_ context.Context, opts store.ListAgentsOptions) ([]store.Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, a := range m.agents {
		if id > opts.AfterID && a.DeletedAt == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []store.Agent
	for _, id := range ids[:min(len(ids), opts.Limit)] {
		out = append(out, m.agents[id])
	}
	return out, nil
}

func (m *memStore) set(id string, f func(*store.Agent)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok || a.DeletedAt != nil {
		return fmt.Errorf("%w: live agent %s", store.ErrNotFound, id)
	}
	f(&a)
	m.agents[id] = a
	m.writes++
	return nil
}

func (m *memStore) SetApprovedRoutes(_ context.Context, id string, rs store.RouteSet) error {
	return m.set(id, func(a *store.Agent) { a.ApprovedRoutes = rs })
}

func (m *memStore) SetLastRoutes(_ context.Context, id string, rs store.RouteSet) error {
	return m.set(id, func(a *store.Agent) { a.LastRoutes = rs })
}

func (m *memStore) Writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

// agent is a stored agent with approved and last routes.
func agent(id, name string, approved, last store.RouteSet) store.Agent {
	return store.Agent{ID: id, Name: name, ApprovedRoutes: approved, LastRoutes: last}
}

type bookEnv struct {
	clk   *fakeclock.Clock
	reg   *registry.Registry
	store *memStore
	book  *Book
}

func newBook(t *testing.T, acceptAny bool, agents ...store.Agent) *bookEnv {
	t.Helper()
	e := &bookEnv{clk: fakeclock.New(time.Unix(1_900_000_000, 0)), store: newMemStore(agents...)}
	e.reg = registry.New(e.clk.Now)
	var err error
	e.book, err = New(Config{Store: e.store, Live: e.reg, AcceptAny: acceptAny, Logger: testlog.Logger(t, "approval")})
	if err != nil {
		t.Fatal(err)
	}
	e.reg.SetApprover(e.book)
	if err := e.book.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	return e
}

// connect registers a live connection of the agent.
func (e *bookEnv) connect(id, name string) *registry.Entry {
	en := &registry.Entry{AgentID: id, Name: name, Conn: nopConn{}}
	e.reg.Register(en)
	return en
}

type nopConn struct{}

func (nopConn) CloseWithReason(string) {}

func routes(subnets []string, domains ...string) registry.Routes {
	var r registry.Routes
	for _, s := range subnets {
		r.Subnets = append(r.Subnets, netip.MustParsePrefix(s))
	}
	for _, d := range domains {
		r.Domains = append(r.Domains, dataplane.DomainRoute{Name: d})
	}
	return r
}

func (e *bookEnv) covering(t *testing.T, host string) string {
	t.Helper()
	k, ok := e.book.Covering(host)
	if !ok {
		return ""
	}
	return k.Name + " " + k.Route + " " + k.State
}

// After a restart (Load) the last routes of every agent are known, inside
// their approval only; the most specific one is named.
func TestBookKnownRoutesAfterLoad(t *testing.T) {
	e := newBook(t, false,
		agent("a", "narrow", store.RouteSet{Subnets: []string{"10.0.0.0/8"}, Domains: []string{"contoso.local"}},
			store.RouteSet{Subnets: []string{"10.0.0.0/24", "192.0.2.0/24"}, Domains: []string{"db.contoso.local", "other.test"}}),
		agent("b", "wide", store.RouteSet{Subnets: []string{"10.0.0.0/16"}, Domains: []string{"*.contoso.local"}},
			store.RouteSet{Subnets: []string{"10.0.0.0/16"}, Domains: []string{"*.contoso.local"}}),
	)
	cases := map[string]string{
		"10.0.0.5":           "narrow 10.0.0.0/24 offline",
		"::ffff:10.0.0.5":    "narrow 10.0.0.0/24 offline",
		"10.0.7.5":           "wide 10.0.0.0/16 offline",
		"10.1.0.1":           "",
		"192.0.2.1":          "", // outside narrow's approval
		"db.contoso.local":   "narrow db.contoso.local offline",
		"DB.Contoso.Local.":  "narrow db.contoso.local offline",
		"x.db.contoso.local": "narrow db.contoso.local offline",
		"web.contoso.local":  "wide *.contoso.local offline",
		"contoso.local":      "",
		"other.test":         "",
		"2001:db8::1":        "",
		"":                   "",
	}
	for host, want := range cases {
		if got := e.covering(t, host); got != want {
			t.Errorf("Covering(%q) = %q, want %q", host, got, want)
		}
	}
}

// A connected agent's known routes are named with why it cannot carry a
// session; an online agent that serves them is skipped.
func TestBookCoveringStates(t *testing.T) {
	e := newBook(t, false, agent("a", "jump", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{Subnets: []string{"10.1.0.0/16"}}))
	en := e.connect("a", "jump")
	if got := e.covering(t, "10.1.0.1"); got != "jump 10.1.0.0/16 connecting" {
		t.Fatalf("before its first advertisement: %q", got)
	}
	adv := e.reg.Apply(en, 1, routes([]string{"10.1.0.0/16"}).Subnets, nil)
	if err := e.book.Advertised(t.Context(), "a", routes([]string{"10.1.0.0/16"})); err != nil {
		t.Fatal(err)
	}
	if len(adv.Accepted.Subnets) != 1 {
		t.Fatalf("the approved subnet was refused: %+v", adv)
	}
	if got := e.covering(t, "10.1.0.1"); got != "" {
		t.Fatalf("online and serving: %q", got)
	}
	e.clk.Advance(registry.UnresponsiveAfter)
	if got := e.covering(t, "10.1.0.1"); got != "jump 10.1.0.0/16 unresponsive" {
		t.Fatalf("silent: %q", got)
	}
	e.reg.Touch(en)
	if adv := e.reg.Apply(en, 2, nil, nil); !adv.Draining {
		t.Fatal("withdrawal is not a drain")
	}
	if got := e.covering(t, "10.1.0.1"); got != "jump 10.1.0.0/16 draining" {
		t.Fatalf("draining: %q", got)
	}
	e.reg.Unregister(en)
	if got := e.covering(t, "10.1.0.1"); got != "jump 10.1.0.0/16 offline" {
		t.Fatalf("gone: %q", got)
	}
}

// Advertised replaces the last routes in memory and in the store, once per
// change; routes outside the approval are kept but never known.
func TestBookAdvertised(t *testing.T) {
	e := newBook(t, false, agent("a", "jump", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{}))
	ctx := t.Context()
	r := routes([]string{"10.2.0.0/16", "172.16.0.0/12"}, "x.test")
	if err := e.book.Advertised(ctx, "a", r); err != nil {
		t.Fatal(err)
	}
	if got := e.covering(t, "10.2.0.1"); got != "jump 10.2.0.0/16 offline" {
		t.Fatalf("advertised subnet: %q", got)
	}
	if got := e.covering(t, "172.16.0.1") + e.covering(t, "x.test"); got != "" {
		t.Fatalf("unapproved routes are known: %q", got)
	}
	a, _ := e.store.GetAgent(ctx, "a")
	if !slices.Equal(a.LastRoutes.Subnets, []string{"10.2.0.0/16", "172.16.0.0/12"}) || !slices.Equal(a.LastRoutes.Domains, []string{"x.test"}) {
		t.Fatalf("stored last routes %+v", a.LastRoutes)
	}
	writes := e.store.Writes()
	r.Epoch = 9
	if err := e.book.Advertised(ctx, "a", r); err != nil || e.store.Writes() != writes {
		t.Fatalf("the same routes again wrote the store (%v)", err)
	}
	if err := e.book.Advertised(ctx, "a", routes([]string{"10.3.0.0/16"})); err != nil {
		t.Fatal(err)
	}
	if got := e.covering(t, "10.2.0.1"); got != "" {
		t.Fatalf("a withdrawn route stays known: %q", got)
	}
	if err := e.book.Advertised(ctx, "unknown", r); err != nil {
		t.Fatalf("an unknown agent: %v", err)
	}
}

// SetApproved applies to advertisements and to known routes at once, and
// is stored; an agent enrolled after Load is picked up from the store.
func TestBookSetApproved(t *testing.T) {
	e := newBook(t, false, agent("a", "jump", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{Subnets: []string{"10.1.0.0/16", "192.0.2.0/24"}}))
	ctx := t.Context()
	if got := e.covering(t, "192.0.2.1"); got != "" {
		t.Fatalf("unapproved known: %q", got)
	}
	if err := e.book.SetApproved(ctx, "a", mustParse(t, []string{"192.0.2.0/24"}, nil)); err != nil {
		t.Fatal(err)
	}
	if got := e.covering(t, "192.0.2.1") + "|" + e.covering(t, "10.1.0.1"); got != "jump 192.0.2.0/24 offline|" {
		t.Fatalf("after SetApproved: %q", got)
	}
	acc, rej := e.book.Approve("a", routes([]string{"10.1.0.0/16", "192.0.2.0/25"}))
	if len(acc.Subnets) != 1 || acc.Subnets[0].String() != "192.0.2.0/25" || len(rej.Subnets) != 1 {
		t.Fatalf("Approve after SetApproved: %+v / %+v", acc, rej)
	}
	if a, _ := e.store.GetAgent(ctx, "a"); !slices.Equal(a.ApprovedRoutes.Subnets, []string{"192.0.2.0/24"}) {
		t.Fatalf("stored approval %+v", a.ApprovedRoutes)
	}

	// Enrolled after Load, never connected.
	e.store.agents["b"] = agent("b", "late", store.RouteSet{}, store.RouteSet{Domains: []string{"late.test"}})
	if err := e.book.SetApproved(ctx, "b", mustParse(t, nil, []string{"late.test"})); err != nil {
		t.Fatal(err)
	}
	if got := e.covering(t, "db.late.test"); got != "late late.test offline" {
		t.Fatalf("late agent: %q", got)
	}
	if err := e.book.SetApproved(ctx, "nobody", Set{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown agent: %v", err)
	}
}

// A forgotten (deleted) agent is neither known nor approved, and stays
// forgotten.
func TestBookForget(t *testing.T) {
	a := agent("a", "jump", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{Subnets: []string{"10.1.0.0/16"}})
	e := newBook(t, false, a)
	e.book.Forget("a")
	if got := e.covering(t, "10.1.0.1"); got != "" {
		t.Fatalf("forgotten agent known: %q", got)
	}
	e.book.Admit(a)
	if err := e.book.Advertised(t.Context(), "a", routes([]string{"10.1.0.0/16"})); err != nil {
		t.Fatal(err)
	}
	if got := e.covering(t, "10.1.0.1"); got != "" {
		t.Fatalf("forgotten agent came back: %q", got)
	}
	if acc, _ := e.book.Approve("a", routes([]string{"10.1.0.0/16"})); len(acc.Subnets) != 0 {
		t.Fatal("a forgotten agent's routes are approved")
	}
}

// With AcceptAny every route counts, approved or not.
func TestBookAcceptAny(t *testing.T) {
	e := newBook(t, true, agent("a", "lab", store.RouteSet{}, store.RouteSet{Subnets: []string{"0.0.0.0/0"}}))
	if got := e.covering(t, "198.51.100.1"); got != "lab 0.0.0.0/0 offline" {
		t.Fatalf("known with AcceptAny: %q", got)
	}
	if acc, rej := e.book.Approve("a", routes([]string{"0.0.0.0/0"}, "com")); len(acc.Subnets) != 1 || len(acc.Domains) != 1 || len(rej.Subnets)+len(rej.Domains) != 0 {
		t.Fatalf("Approve with AcceptAny: %+v / %+v", acc, rej)
	}
}

// Load warns about agents with nothing approved.
func TestBookLoadWarnsUnapproved(t *testing.T) {
	logs := testlog.New(t)
	s := newMemStore(agent("a", "legacy", store.RouteSet{}, store.RouteSet{}), agent("b", "fine", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{}))
	b, err := New(Config{Store: s, Live: registry.New(nil), Logger: hclog.New(&hclog.LoggerOptions{Name: "approval", Level: hclog.Debug, Output: logs})})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !logs.Contains("agents without approved routes") || !strings.Contains(logs.String(), "legacy") || strings.Contains(logs.String(), "agents=fine") {
		t.Fatalf("logs:\n%s", logs)
	}
}

// Refresh records what another replica changed of an agent not connected
// here — a new agent, new last routes, a new approval — and leaves alone
// a forgotten agent and one connected here. Serving is the same
// intersection.
func TestBookRefresh(t *testing.T) {
	e := newBook(t, false, agent("a", "old-name", store.RouteSet{Subnets: []string{"10.0.0.0/8"}}, store.RouteSet{Subnets: []string{"10.1.0.0/16"}}))
	approved := store.RouteSet{Subnets: []string{"10.0.0.0/8"}}
	e.book.Refresh("a", "a", approved, store.RouteSet{Subnets: []string{"10.2.0.0/16", "192.0.2.0/24"}})
	e.book.Refresh("b", "b", store.RouteSet{Subnets: []string{"172.16.0.0/12"}}, store.RouteSet{Subnets: []string{"172.16.1.0/24"}})
	for host, want := range map[string]string{
		"10.1.0.1":   "",
		"10.2.0.1":   "a 10.2.0.0/16 offline",
		"192.0.2.1":  "",
		"172.16.1.1": "b 172.16.1.0/24 offline",
	} {
		if got := e.covering(t, host); got != want {
			t.Errorf("after Refresh: Covering(%q) = %q, want %q", host, got, want)
		}
	}
	if got := Serving(approved, store.RouteSet{Subnets: []string{"10.2.0.0/16", "192.0.2.0/24"}}, false); len(got.Subnets) != 1 || got.Subnets[0].String() != "10.2.0.0/16" {
		t.Errorf("Serving = %+v, want 10.2.0.0/16 only", got)
	}
	if got := Serving(approved, store.RouteSet{Subnets: []string{"192.0.2.0/24"}}, true); len(got.Subnets) != 1 {
		t.Errorf("Serving with acceptAny = %+v, want everything", got)
	}

	e.book.Forget("b")
	e.book.Refresh("b", "b", store.RouteSet{Subnets: []string{"172.16.0.0/12"}}, store.RouteSet{Subnets: []string{"172.16.1.0/24"}})
	if got := e.covering(t, "172.16.1.1"); got != "" {
		t.Errorf("a forgotten agent refreshed: %q", got)
	}
	e.connect("a", "a")
	e.book.Refresh("a", "a", approved, store.RouteSet{Subnets: []string{"10.3.0.0/16"}})
	if got := e.covering(t, "10.3.0.1"); got != "" {
		t.Errorf("an agent connected here refreshed: %q", got)
	}
}
