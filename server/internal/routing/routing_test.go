package routing

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/server/internal/registry"
)

type fakeConn struct{}

func (fakeConn) CloseWithReason(string) {}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type env struct {
	t   *testing.T
	clk *fakeclock.Clock
	reg *registry.Registry
	r   *Router
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := fakeclock.New(base)
	reg := registry.New(clk.Now)
	return &env{t: t, clk: clk, reg: reg, r: New(reg)}
}

// connect registers agent id (named "name-"+id) now and, if routes are
// given, advertises them with epoch 1. A route containing "/" is a subnet,
// anything else a domain.
func (v *env) connect(id string, routes ...string) *registry.Entry {
	v.t.Helper()
	e := &registry.Entry{AgentID: id, Name: "name-" + id, Conn: fakeConn{}}
	v.reg.Register(e)
	if len(routes) > 0 {
		v.advertise(e, 1, routes...)
	}
	return e
}

func (v *env) advertise(e *registry.Entry, epoch uint64, routes ...string) bool {
	v.t.Helper()
	subnets, domains := splitRoutes(v.t, routes)
	return v.reg.Advertise(e, epoch, subnets, domains)
}

func splitRoutes(t testing.TB, routes []string) ([]netip.Prefix, []dataplane.DomainRoute) {
	t.Helper()
	var subnets []netip.Prefix
	var domains []dataplane.DomainRoute
	for _, s := range routes {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				t.Fatalf("bad subnet %q: %v", s, err)
			}
			subnets = append(subnets, p)
		} else {
			domains = append(domains, dataplane.DomainRoute{Name: s})
		}
	}
	return subnets, domains
}

// lookup returns Lookup's answer as "agent=route" strings.
func (v *env) lookup(host string) []string {
	v.t.Helper()
	var out []string
	for _, c := range v.r.Lookup(nil, host) {
		out = append(out, c.AgentID+"="+c.MatchedRoute)
	}
	checkIndex(v.t, v.r)
	return out
}

func (v *env) expect(host string, want ...string) {
	v.t.Helper()
	if got := v.lookup(host); !slices.Equal(got, want) {
		v.t.Errorf("Lookup(%q) = %q, want %q", host, got, want)
	}
}

// checkIndex verifies the router's invariants: every list is sorted and
// holds each agent once, and the indexes hold exactly the memberships the
// agents' records list, on their current entries or remote records; an
// agent connected here is indexed by its connection, else by its remote
// record.
func checkIndex(t testing.TB, r *Router) {
	t.Helper()
	r.mu.RLock()
	defer r.mu.RUnlock()
	type key struct{ agent, where string }
	seen := make(map[key]bool)
	check := func(where string, l memberList) {
		t.Helper()
		if len(l) == 0 {
			t.Errorf("%s: empty member list kept in the index", where)
		}
		if !slices.IsSortedFunc(l, compareMembers) {
			t.Errorf("%s: members out of order", where)
		}
		for _, m := range l {
			if (m.entry == nil) == (m.remote == nil) {
				t.Errorf("%s: member %s has entry %v and remote %v", where, m.agentID(), m.entry, m.remote)
			}
			a := r.agents[m.agentID()]
			if a == nil || a.entry != m.entry || a.remote != m.remote {
				t.Errorf("%s: member %s is not the agent's current entry or remote record", where, m.agentID())
			}
			k := key{m.agentID(), where}
			if seen[k] {
				t.Errorf("%s: agent %s listed twice", where, m.agentID())
			}
			seen[k] = true
		}
	}
	for p, l := range r.prefixes.All() {
		check(p.String(), l)
		for _, m := range l {
			if m.route != p.String() {
				t.Errorf("%s: member route %q", p, m.route)
			}
		}
	}
	for d, dm := range r.domains {
		if len(dm.apex) > 0 {
			check("apex "+d, dm.apex)
		}
		check("under "+d, dm.under)
	}
	want := 0
	for id, a := range r.agents {
		switch {
		case a.entry != nil && (a.entry.AgentID != id || a != r.local[id]):
			t.Errorf("agent record %s holds entry of %s, or not its local record", id, a.entry.AgentID)
		case a.entry == nil && (r.local[id] != nil || a != r.remote[id]):
			t.Errorf("agent %s indexed by its remote record, not its local one or not its current remote one", id)
		}
		for _, p := range a.prefixes {
			if !seen[key{id, p.String()}] {
				t.Errorf("agent %s missing from %s", id, p)
			}
			want++
		}
		for _, d := range a.domains {
			if d.plain != "" {
				if !seen[key{id, "apex " + d.key}] {
					t.Errorf("agent %s missing from apex %s", id, d.key)
				}
				want++
			}
			if !seen[key{id, "under " + d.key}] {
				t.Errorf("agent %s missing from under %s", id, d.key)
			}
			want++
		}
	}
	if len(seen) != want {
		t.Errorf("index holds %d memberships, agent records list %d", len(seen), want)
	}
	for id := range r.local {
		if r.agents[id] == nil {
			t.Errorf("local agent %s not indexed", id)
		}
	}
	for id := range r.remote {
		if r.agents[id] == nil {
			t.Errorf("remote agent %s not indexed", id)
		}
	}
}

type agentSpec struct {
	id     string
	at     time.Duration // connection time after base
	status registry.Status
	routes []string
}

func TestLookup(t *testing.T) {
	on := registry.Online
	tests := []struct {
		name   string
		agents []agentSpec
		// queries maps a host to the wanted "agent=route" list.
		queries map[string][]string
	}{
		{
			name: "longest prefix wins",
			agents: []agentSpec{
				{"wide", 3, on, []string{"10.0.0.0/8"}},
				{"mid", 2, on, []string{"10.1.0.0/16"}},
				{"narrow", 1, on, []string{"10.1.2.0/24"}},
				{"host", 0, on, []string{"10.1.2.7/32"}},
			},
			queries: map[string][]string{
				"10.1.2.3":     {"narrow=10.1.2.0/24"},
				"10.1.2.7":     {"host=10.1.2.7/32"},
				"10.1.3.3":     {"mid=10.1.0.0/16"},
				"10.200.0.1":   {"wide=10.0.0.0/8"},
				"11.0.0.1":     nil,
				"10.1.2.255":   {"narrow=10.1.2.0/24"},
				"10.1.255.255": {"mid=10.1.0.0/16"},
			},
		},
		{
			name: "default route",
			agents: []agentSpec{
				{"any", 0, on, []string{"0.0.0.0/0"}},
				{"lan", 0, on, []string{"192.168.0.0/16"}},
			},
			queries: map[string][]string{
				"192.168.1.1": {"lan=192.168.0.0/16"},
				"8.8.8.8":     {"any=0.0.0.0/0"},
			},
		},
		{
			name: "ties most recently connected first then agent id",
			agents: []agentSpec{
				{"a", 1, on, []string{"10.0.0.0/24", "contoso.local"}},
				{"b", 3, on, []string{"10.0.0.0/24", "contoso.local"}},
				{"d", 2, on, []string{"10.0.0.0/24", "contoso.local"}},
				{"c", 2, on, []string{"10.0.0.0/24", "contoso.local"}},
			},
			queries: map[string][]string{
				"10.0.0.1":        {"b=10.0.0.0/24", "c=10.0.0.0/24", "d=10.0.0.0/24", "a=10.0.0.0/24"},
				"contoso.local":   {"b=contoso.local", "c=contoso.local", "d=contoso.local", "a=contoso.local"},
				"x.contoso.local": {"b=contoso.local", "c=contoso.local", "d=contoso.local", "a=contoso.local"},
			},
		},
		{
			name: "host bits of advertised prefixes are masked",
			agents: []agentSpec{
				{"a", 0, on, []string{"10.1.2.3/24"}},
				{"b", 1, on, []string{"10.1.2.0/24"}},
				{"dup", 2, on, []string{"10.9.0.0/16", "10.9.1.1/16", "10.9.0.0/16"}},
			},
			queries: map[string][]string{
				"10.1.2.200": {"b=10.1.2.0/24", "a=10.1.2.0/24"},
				"10.9.3.3":   {"dup=10.9.0.0/16"},
			},
		},
		{
			name: "offline and unresponsive agents are skipped",
			agents: []agentSpec{
				{"up", 0, on, []string{"10.0.0.0/24", "contoso.local"}},
				{"slow", 2, registry.Unresponsive, []string{"10.0.0.0/24", "contoso.local"}},
				{"down", 1, registry.Offline, []string{"10.0.0.0/24", "contoso.local"}},
				{"gone", 0, registry.Offline, []string{"10.5.0.0/24", "gone.test"}},
			},
			queries: map[string][]string{
				"10.0.0.1":      {"up=10.0.0.0/24"},
				"contoso.local": {"up=contoso.local"},
				"10.5.0.1":      nil,
				"gone.test":     nil,
			},
		},
		{
			name: "fall back to a shorter prefix when the longest has no online agent",
			agents: []agentSpec{
				{"wide", 0, on, []string{"10.0.0.0/8"}},
				{"mid-dead", 1, registry.Offline, []string{"10.1.0.0/16"}},
				{"narrow-slow", 2, registry.Unresponsive, []string{"10.1.2.0/24"}},
				{"other", 3, on, []string{"10.1.2.0/25"}},
			},
			queries: map[string][]string{
				"10.1.2.200": {"wide=10.0.0.0/8"},
				"10.1.3.1":   {"wide=10.0.0.0/8"},
				"10.1.2.1":   {"other=10.1.2.0/25"},
			},
		},
		{
			name: "fall back over several dead levels",
			agents: []agentSpec{
				{"any", 0, on, []string{"0.0.0.0/0"}},
				{"d8", 1, registry.Offline, []string{"10.0.0.0/8"}},
				{"d16", 1, registry.Offline, []string{"10.1.0.0/16"}},
				{"d32", 1, registry.Unresponsive, []string{"10.1.2.3/32"}},
			},
			queries: map[string][]string{
				"10.1.2.3": {"any=0.0.0.0/0"},
			},
		},
		{
			name: "exact name beats suffix",
			agents: []agentSpec{
				{"exact", 0, on, []string{"db01.contoso.local"}},
				{"suffix", 1, on, []string{"contoso.local"}},
				{"wild", 2, on, []string{"*.contoso.local"}},
			},
			queries: map[string][]string{
				"db01.contoso.local":   {"exact=db01.contoso.local"},
				"x.db01.contoso.local": {"exact=db01.contoso.local"},
				"web.contoso.local":    {"wild=*.contoso.local", "suffix=contoso.local"},
				"contoso.local":        {"suffix=contoso.local"},
			},
		},
		{
			name: "longest suffix wins",
			agents: []agentSpec{
				{"corp", 1, on, []string{"contoso.local"}},
				{"finance", 0, on, []string{"finance.contoso.local"}},
				{"tld", 2, on, []string{"local"}},
			},
			queries: map[string][]string{
				"db01.finance.contoso.local": {"finance=finance.contoso.local"},
				"finance.contoso.local":      {"finance=finance.contoso.local"},
				"hr.contoso.local":           {"corp=contoso.local"},
				"printer.local":              {"tld=local"},
				"local":                      {"tld=local"},
				"contoso.com":                nil,
				"notcontoso.local":           {"tld=local"},
			},
		},
		{
			name: "wildcard matches subdomains only, plain matches the apex too",
			agents: []agentSpec{
				{"wild", 0, on, []string{"*.contoso.local"}},
				{"plain", 0, on, []string{"fabrikam.local"}},
			},
			queries: map[string][]string{
				"contoso.local":      nil,
				"a.contoso.local":    {"wild=*.contoso.local"},
				"a.b.contoso.local":  {"wild=*.contoso.local"},
				"fabrikam.local":     {"plain=fabrikam.local"},
				"a.b.fabrikam.local": {"plain=fabrikam.local"},
				"xcontoso.local":     nil,
			},
		},
		{
			name: "wildcard does not make the apex fall back to a parent",
			agents: []agentSpec{
				{"wild", 1, on, []string{"*.contoso.local"}},
				{"tld", 0, on, []string{"local"}},
			},
			queries: map[string][]string{
				"contoso.local":   {"tld=local"},
				"a.contoso.local": {"wild=*.contoso.local"},
			},
		},
		{
			name: "agent advertising plain and wildcard appears once",
			agents: []agentSpec{
				{"both", 1, on, []string{"*.contoso.local", "contoso.local", "CONTOSO.local"}},
				{"wild", 0, on, []string{"*.contoso.local"}},
			},
			queries: map[string][]string{
				"contoso.local":   {"both=contoso.local"},
				"a.contoso.local": {"both=contoso.local", "wild=*.contoso.local"},
			},
		},
		{
			name: "fall back to a shorter suffix when the longer has no online agent",
			agents: []agentSpec{
				{"corp", 0, on, []string{"contoso.local"}},
				{"finance", 1, registry.Offline, []string{"finance.contoso.local"}},
				{"db", 1, registry.Unresponsive, []string{"db01.finance.contoso.local"}},
			},
			queries: map[string][]string{
				"db01.finance.contoso.local": {"corp=contoso.local"},
				"finance.contoso.local":      {"corp=contoso.local"},
			},
		},
		{
			name: "case-insensitive and trailing dot",
			agents: []agentSpec{
				{"a", 0, on, []string{"Contoso.LOCAL", "*.Fabrikam.Local"}},
			},
			queries: map[string][]string{
				"DB01.Contoso.Local": {"a=contoso.local"},
				"contoso.local":      {"a=contoso.local"},
				"CONTOSO.LOCAL.":     {"a=contoso.local"},
				"X.FABRIKAM.LOCAL":   {"a=*.fabrikam.local"},
				"FABRIKAM.LOCAL":     nil,
			},
		},
		{
			name: "IPv6 literals match no subnet, IPv4-mapped ones match as IPv4",
			agents: []agentSpec{
				{"any", 0, on, []string{"0.0.0.0/0", "::/0"}},
				{"lan", 0, on, []string{"10.1.0.0/16", "::ffff:10.2.0.0/112"}},
			},
			queries: map[string][]string{
				"::1":              nil,
				"2001:db8::1":      nil,
				"fe80::1%eth0":     nil,
				"::ffff:10.1.2.3":  {"lan=10.1.0.0/16"},
				"::ffff:10.2.9.9":  {"lan=10.2.0.0/16"},
				"::ffff:192.0.2.1": {"any=0.0.0.0/0"},
				"10.2.1.1":         {"lan=10.2.0.0/16"},
			},
		},
		{
			name: "names and IPs do not mix",
			agents: []agentSpec{
				{"a", 0, on, []string{"10.0.0.0/8", "10.1.2.3", "2"}},
			},
			queries: map[string][]string{
				"10.1.2.3":    {"a=10.0.0.0/8"},
				"x.10.1.2.3":  {"a=10.1.2.3"},
				"10.1.2":      {"a=2"},
				"":            nil,
				".":           nil,
				"[10.1.2.3]":  nil,
				"10.1.2.3:80": nil,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t)
			entries := make(map[string]*registry.Entry)
			for _, a := range tc.agents {
				v.clk.Set(base.Add(a.at * time.Second))
				entries[a.id] = v.connect(a.id, a.routes...)
			}
			// Age everyone to offline, then revive the others: unresponsive
			// ones were last seen 50 s ago, online ones now.
			v.clk.Set(base.Add(time.Hour))
			for _, a := range tc.agents {
				if a.status != registry.Offline {
					v.reg.Touch(entries[a.id])
				}
			}
			v.clk.Advance(50 * time.Second)
			for _, a := range tc.agents {
				if a.status == registry.Online {
					v.reg.Touch(entries[a.id])
				}
				if got := v.reg.Status(entries[a.id]); got != a.status {
					t.Fatalf("agent %s is %v, want %v", a.id, got, a.status)
				}
			}
			for host, want := range tc.queries {
				v.expect(host, want...)
			}
		})
	}
}

func TestCandidateFields(t *testing.T) {
	v := newEnv(t)
	v.clk.Set(base.Add(time.Minute))
	e := v.connect("agent-1", "10.10.0.0/24")
	dst := []Candidate{{AgentID: "keep"}}
	got := v.r.Lookup(dst, "10.10.0.5")
	want := Candidate{
		AgentID:      "agent-1",
		Name:         "name-agent-1",
		MatchedRoute: "10.10.0.0/24",
		ConnectedAt:  base.Add(time.Minute),
		Entry:        e,
	}
	if len(got) != 2 || got[0].AgentID != "keep" || !reflect.DeepEqual(got[1], want) {
		t.Fatalf("Lookup = %+v, want [keep %+v]", got, want)
	}
	if got := v.r.Lookup(got[:1], "192.0.2.1"); len(got) != 1 {
		t.Fatalf("no match appended %+v", got[1:])
	}
}

func TestRouteChanges(t *testing.T) {
	v := newEnv(t)
	a := v.connect("a", "10.1.0.0/16", "old.test", "*.both.test")
	v.clk.Advance(time.Second)
	b := v.connect("b", "10.0.0.0/8", "test")
	v.expect("10.1.0.1", "a=10.1.0.0/16")
	v.expect("x.old.test", "a=old.test")

	// A higher epoch replaces every route.
	if !v.advertise(a, 2, "10.2.0.0/16", "new.test", "both.test") {
		t.Fatal("epoch 2 not applied")
	}
	v.expect("10.1.0.1", "b=10.0.0.0/8")
	v.expect("10.2.0.1", "a=10.2.0.0/16")
	v.expect("x.old.test", "b=test")
	v.expect("new.test", "a=new.test")
	v.expect("both.test", "a=both.test")

	// Equal and lower epochs change nothing.
	v.advertise(a, 2, "10.3.0.0/16")
	v.advertise(a, 1, "10.3.0.0/16")
	v.expect("10.3.0.1", "b=10.0.0.0/8")
	v.expect("10.2.0.1", "a=10.2.0.0/16")

	// Withdrawing everything.
	v.advertise(a, 3)
	v.expect("10.2.0.1", "b=10.0.0.0/8")
	v.expect("new.test", "b=test")

	// Leaving removes the agent from every entry.
	v.advertise(a, 4, "10.0.0.0/8", "test", "*.test")
	v.expect("10.9.0.1", "b=10.0.0.0/8", "a=10.0.0.0/8")
	v.expect("x.test", "b=test", "a=test")
	if !v.reg.Unregister(a) {
		t.Fatal("Unregister failed")
	}
	v.expect("10.9.0.1", "b=10.0.0.0/8")
	v.expect("x.test", "b=test")
	v.reg.Unregister(b)
	v.expect("10.9.0.1")
	v.expect("x.test")
	if n, d, g := v.r.prefixes.Size(), len(v.r.domains), len(v.r.agents); n+d+g != 0 {
		t.Fatalf("after everyone left: %d prefixes, %d domains, %d agents", n, d, g)
	}
}

func TestSupersede(t *testing.T) {
	v := newEnv(t)
	old := v.connect("a", "10.0.0.0/24", "contoso.local")
	v.expect("10.0.0.1", "a=10.0.0.0/24")

	// The new connection has advertised nothing yet: the old one's routes
	// are gone with it.
	v.clk.Advance(time.Second)
	cur := &registry.Entry{AgentID: "a", Name: "name-a", Conn: fakeConn{}}
	if v.reg.Register(cur) != old {
		t.Fatal("Register did not supersede")
	}
	v.expect("10.0.0.1")
	v.expect("contoso.local")

	// The old connection's late advertisement and cleanup change nothing.
	v.advertise(old, 9, "10.9.0.0/16")
	if v.reg.Unregister(old) {
		t.Fatal("Unregister of the superseded entry succeeded")
	}
	v.expect("10.9.0.1")

	v.advertise(cur, 1, "10.0.0.0/24", "contoso.local")
	got := v.r.Lookup(nil, "10.0.0.1")
	if len(got) != 1 || got[0].Entry != cur || !got[0].ConnectedAt.Equal(base.Add(time.Second)) {
		t.Fatalf("Lookup = %+v, want the new entry only", got)
	}
	v.expect("x.contoso.local", "a=contoso.local")

	// Supersede again with routes re-advertised: still one membership.
	v.clk.Advance(time.Second)
	third := v.connect("a", "10.0.0.0/24", "contoso.local")
	got = v.r.Lookup(nil, "x.contoso.local")
	if len(got) != 1 || got[0].Entry != third {
		t.Fatalf("Lookup = %+v, want the third entry only", got)
	}
	checkIndex(t, v.r)
}

// An agent that failed to answer a session is tried after the others until it
// is heard from; a silent agent is skipped like an unresponsive one.
func TestDemotedAndSilent(t *testing.T) {
	v := newEnv(t)
	a := v.connect("a", "10.0.0.0/24", "contoso.local")
	v.clk.Advance(time.Second)
	b := v.connect("b", "10.0.0.0/24", "contoso.local")
	v.clk.Advance(time.Second)
	c := v.connect("c", "10.0.0.0/24", "contoso.local")
	v.expect("10.0.0.1", "c=10.0.0.0/24", "b=10.0.0.0/24", "a=10.0.0.0/24")

	v.reg.Demote(c)
	v.reg.Demote(b)
	v.expect("10.0.0.1", "a=10.0.0.0/24", "c=10.0.0.0/24", "b=10.0.0.0/24")
	v.expect("x.contoso.local", "a=contoso.local", "c=contoso.local", "b=contoso.local")
	v.reg.Touch(c)
	v.expect("10.0.0.1", "c=10.0.0.0/24", "a=10.0.0.0/24", "b=10.0.0.0/24")

	v.reg.SetSilent(a, true)
	v.expect("10.0.0.1", "c=10.0.0.0/24", "b=10.0.0.0/24")
	v.reg.SetSilent(c, true)
	v.reg.SetSilent(b, true)
	v.expect("contoso.local")
	v.reg.SetSilent(a, false)
	v.expect("contoso.local", "a=contoso.local")

	// Demotion costs no allocation.
	dst := make([]Candidate, 0, 4)
	if n := testing.AllocsPerRun(100, func() { dst = v.r.Lookup(dst[:0], "10.0.0.1") }); n != 0 {
		t.Errorf("Lookup with a demoted agent: %v allocs", n)
	}
}

func TestLookupAllocs(t *testing.T) {
	v := newEnv(t)
	v.connect("a", "10.0.0.0/8", "contoso.local")
	v.connect("b", "10.1.0.0/16", "finance.contoso.local")
	dead := v.connect("dead", "10.1.2.0/24", "db.finance.contoso.local")
	v.clk.Advance(time.Minute)
	for _, id := range []string{"a", "b"} {
		e, _ := v.reg.Lookup(id)
		v.reg.Touch(e)
	}
	if v.reg.Status(dead) == registry.Online {
		t.Fatal("dead agent is online")
	}
	dst := make([]Candidate, 0, 4)
	for _, host := range []string{
		"10.1.2.3",                   // falls back from a dead /24
		"10.200.0.1",                 // longest match
		"::ffff:10.1.0.1",            // mapped
		"2001:db8::1",                // IPv6
		"x.db.finance.contoso.local", // falls back from a dead suffix
		"hr.contoso.local",           // suffix
		"10.1.2",                     // not an IP
	} {
		if n := testing.AllocsPerRun(100, func() { dst = v.r.Lookup(dst[:0], host) }); n != 0 {
			t.Errorf("Lookup(%q): %v allocs, want 0", host, n)
		}
	}
}

func TestConcurrentLookupDuringUpdates(t *testing.T) {
	clk := fakeclock.New(base)
	reg := registry.New(clk.Now)
	r := New(reg)
	const agents = 8
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := range 4 {
		wg.Go(func() {
			dst := make([]Candidate, 0, agents)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				host := "10.0.0.1"
				if (n+i)%2 == 1 {
					host = "db.contoso.local"
				}
				dst = r.Lookup(dst[:0], host)
				seen := make(map[string]bool)
				for k, c := range dst {
					if seen[c.AgentID] || (k > 0 && c.ConnectedAt.After(dst[k-1].ConnectedAt)) {
						select {
						case errs <- fmt.Sprintf("Lookup(%s) = %+v", host, dst):
						default:
						}
						return
					}
					seen[c.AgentID] = true
				}
			}
		})
	}
	for n := range 300 {
		id := fmt.Sprintf("agent-%d", n%agents)
		clk.Advance(time.Millisecond)
		e := &registry.Entry{AgentID: id, Conn: fakeConn{}}
		reg.Register(e)
		subnets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", n%3))}
		domains := []dataplane.DomainRoute{{Name: "contoso.local"}, {Name: "*.contoso.local"}}
		reg.Advertise(e, 1, subnets, domains)
		reg.Advertise(e, 2, subnets[n%2:], domains[n%2:])
		if n%5 == 0 {
			reg.Unregister(e)
		}
		// Remote records come and go for the same and other agents.
		remote := fmt.Sprintf("agent-%d", (n+n/agents)%(2*agents))
		switch n % 3 {
		case 0:
			r.SetRemote(Remote{AgentID: remote, ConnectedAt: clk.Now(), Replicas: []Replica{{ID: "r"}},
				Routes: registry.Routes{Subnets: subnets[n%2:], Domains: domains}})
		case 1:
			r.RemoveRemote(remote)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	checkIndex(t, r)
}

func TestMaybeIPLiteral(t *testing.T) {
	for s, want := range map[string]bool{
		"": false, "10.0.0.1": true, "::1": true, "a:b": true, "1.2.3": false, "1.2.3.999": true,
		"db01": false, "10.0.0.1a": false, "x.10.0.0.1": false,
	} {
		if got := maybeIPLiteral(s); got != want {
			t.Errorf("maybeIPLiteral(%q) = %v", s, got)
		}
	}
}

func TestLowerASCII(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "abc.local": "abc.local", "ABC.Local": "abc.local", "é.À.x": "é.À.x", "Z@[": "z@[",
	} {
		if got := lowerASCII(in); got != want {
			t.Errorf("lowerASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

// oracle answers a lookup by scanning every live agent's routes, the slow
// and obvious way, for comparison with the Router.
func oracle(reg *registry.Registry, host string) []string {
	type hit struct {
		rank  int // higher is more specific
		e     *registry.Entry
		route string
	}
	var hits []hit
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	ip, ipErr := netip.ParseAddr(host)
	ip = ip.Unmap()
	for _, s := range reg.List() {
		e, _ := reg.Lookup(s.AgentID)
		if reg.Status(e) != registry.Online {
			continue
		}
		seen := make(map[int]bool) // one hit per rank and agent
		add := func(rank int, route string) {
			if !seen[rank] {
				seen[rank] = true
				hits = append(hits, hit{rank, e, route})
			}
		}
		if ipErr == nil {
			for _, p := range s.Routes.Subnets {
				if p, ok := canonicalPrefix(p); ok && ip.Is4() && p.Contains(ip) {
					add(p.Bits(), p.String())
				}
			}
			continue
		}
		// Plain routes first, so an agent with both forms reports the plain.
		domains := slices.Clone(s.Routes.Domains)
		slices.SortStableFunc(domains, func(a, b dataplane.DomainRoute) int {
			return strings.Compare(a.Name[:1], b.Name[:1]) * -1 // '*' sorts last
		})
		for _, d := range domains {
			name := strings.ToLower(d.Name)
			switch key, wild := strings.CutPrefix(name, "*."); {
			case !wild && name == host:
				add(len(host)+1, name)
			case strings.HasSuffix(host, "."+key):
				add(len(key), name)
			}
		}
	}
	best := -1
	for _, h := range hits {
		best = max(best, h.rank)
	}
	var top []hit
	for _, h := range hits {
		if h.rank == best {
			top = append(top, h)
		}
	}
	slices.SortFunc(top, func(a, b hit) int { return compareMembers(member{entry: a.e}, member{entry: b.e}) })
	var out []string
	for _, h := range top {
		out = append(out, h.e.AgentID+"="+h.route)
	}
	return out
}

func TestAgainstOracle(t *testing.T) {
	v := newEnv(t)
	rng := rand.New(rand.NewPCG(1, 2))
	subnets := []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.2.3/32", "10.2.0.0/16", "10.1.2.9/24"}
	domains := []string{"local", "contoso.local", "*.contoso.local", "finance.contoso.local", "*.finance.contoso.local", "db.finance.contoso.local", "Fabrikam.Local", "*.a.b.local"}
	hosts := []string{"10.1.2.3", "10.1.2.200", "10.1.9.9", "10.2.3.4", "10.200.0.1", "11.0.0.1", "::ffff:10.1.2.3", "::1",
		"local", "x.local", "contoso.local", "x.contoso.local", "finance.contoso.local", "DB.finance.contoso.local",
		"x.db.finance.contoso.local", "fabrikam.local", "a.b.local", "x.a.b.local", "y.x.a.b.local", "b.local"}
	live := make(map[string]*registry.Entry)
	epochs := make(map[*registry.Entry]uint64)
	pick := func(from []string) []string {
		var out []string
		for range rng.IntN(4) {
			out = append(out, from[rng.IntN(len(from))])
		}
		return out
	}
	for step := range 2000 {
		id := fmt.Sprintf("a%d", rng.IntN(6))
		v.clk.Advance(time.Duration(rng.IntN(3)) * time.Second)
		switch op := rng.IntN(10); {
		case op < 2:
			live[id] = v.connect(id)
		case op < 7:
			if e := live[id]; e != nil {
				epochs[e] += uint64(rng.IntN(3)) // sometimes a stale epoch
				v.advertise(e, epochs[e], append(pick(subnets), pick(domains)...)...)
			}
		case op < 8:
			if e := live[id]; e != nil {
				v.reg.Unregister(e)
				delete(live, id)
			}
		case op < 9:
			v.clk.Advance(30 * time.Second) // some agents go quiet
		default:
			if e := live[id]; e != nil {
				v.reg.Touch(e)
			}
		}
		for _, h := range hosts {
			if got, want := v.lookup(h), oracle(v.reg, h); !slices.Equal(got, want) {
				t.Fatalf("step %d: Lookup(%q) = %q, oracle says %q", step, h, got, want)
			}
		}
	}
}

// Candidates say whether their domain was auto-detected; a domain two
// online agents auto-detect is ambiguous for both, one with an explicit
// route or a second auto-detecting agent that went silent is not.
func TestAutoDetectedDomains(t *testing.T) {
	v := newEnv(t)
	auto := func(e *registry.Entry, epoch uint64, names ...string) {
		t.Helper()
		var ds []dataplane.DomainRoute
		for _, n := range names {
			ds = append(ds, dataplane.DomainRoute{Name: n, AutoDetected: true})
		}
		v.reg.Advertise(e, epoch, nil, ds)
	}
	a := v.connect("a")
	auto(a, 1, "compute.internal")
	v.clk.Advance(time.Second)
	b := v.connect("b")
	auto(b, 1, "compute.internal")
	v.clk.Advance(time.Second)
	v.connect("c", "compute.internal")

	cands := v.r.Lookup(nil, "ip-10-0-0-1.compute.internal")
	if len(cands) != 3 {
		t.Fatalf("candidates %+v", cands)
	}
	autos := map[string]bool{}
	for _, c := range cands {
		autos[c.AgentID] = c.AutoDetected
	}
	if !autos["a"] || !autos["b"] || autos["c"] {
		t.Fatalf("AutoDetected by agent: %v", autos)
	}
	for id, want := range map[string][]string{"a": {"compute.internal"}, "b": {"compute.internal"}, "c": nil, "nobody": nil} {
		if got := v.r.AmbiguousDomains(id); !slices.Equal(got, want) {
			t.Errorf("AmbiguousDomains(%s) = %v, want %v", id, got, want)
		}
	}
	// b goes silent: a's domain is no longer shared with an online agent.
	v.clk.Advance(registry.UnresponsiveAfter - 2*time.Second)
	v.reg.Touch(a)
	v.clk.Advance(2 * time.Second)
	if got := v.r.AmbiguousDomains("a"); got != nil {
		t.Errorf("shared with a silent agent only: %v", got)
	}
	// The same domain advertised once configured and once auto-detected
	// counts as configured.
	v.reg.Touch(a)
	v.reg.Advertise(a, 2, nil, []dataplane.DomainRoute{{Name: "compute.internal", AutoDetected: true}, {Name: "compute.internal"}})
	if got := v.r.Lookup(nil, "compute.internal"); len(got) == 0 || got[0].AgentID != "a" || got[0].AutoDetected {
		t.Errorf("configured and auto-detected copies: %+v", got)
	}
	checkIndex(t, v.r)
}
