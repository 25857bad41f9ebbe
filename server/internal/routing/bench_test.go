package routing

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/registry"
)

// Benchmark scale: DESIGN.md's target gateway.
const (
	benchAgents  = 10_000
	benchSubnets = 10 // per agent
	benchDomains = 1_000
)

// benchWorld is a registry and router holding benchAgents agents. Agent i
// advertises 8 /24s of its own, a /24 shared with its HA partner (i^1) and a
// /16 shared with every 256th agent; agents i%10 == 0 also advertise one
// domain each, alternately plain and wildcard.
type benchWorld struct {
	reg     *registry.Registry
	r       *Router
	entries []*registry.Entry
	routes  [][]netip.Prefix
	domains [][]dataplane.DomainRoute
	ipHosts []string
	names   []string
}

func benchSubnetsOf(i, shift int) []netip.Prefix {
	out := make([]netip.Prefix, 0, benchSubnets)
	for j := range benchSubnets - 2 {
		out = append(out, prefix4(0x0A000000+uint32(i*(benchSubnets-2)+j+shift)<<8, 24))
	}
	out = append(out,
		prefix4(0xAC100000+uint32(i/2)<<8, 24),    // 172.16.0.0/12 space, HA pairs
		prefix4(0x0A000000+uint32(i%256)<<16, 16), // overlaps the /24s
	)
	return out
}

func prefix4(a uint32, bits int) netip.Prefix {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.PrefixFrom(netip.AddrFrom4(b), bits)
}

func newBenchWorld(tb testing.TB) *benchWorld { return newBenchWorldRemote(tb, false) }

// newBenchWorldRemote is newBenchWorld; with remote, the odd agents are
// connected to another replica (Router.SetRemote), so that every HA pair
// has one local and one remote member, as in a cluster of two.
func newBenchWorldRemote(tb testing.TB, remote bool) *benchWorld {
	tb.Helper()
	w := &benchWorld{reg: registry.New(nil)}
	w.r = New(w.reg)
	domains := 0
	replicas := []Replica{{ID: "r-b", Name: "gw-b"}}
	for i := range benchAgents {
		e := &registry.Entry{AgentID: fmt.Sprintf("agent-%05d", i), Name: fmt.Sprintf("jump%05d", i), Conn: fakeConn{}}
		subnets := benchSubnetsOf(i, 0)
		var doms []dataplane.DomainRoute
		if i%(benchAgents/benchDomains) == 0 {
			n := i / (benchAgents / benchDomains)
			name := fmt.Sprintf("site%d.contoso.local", n)
			if n%2 == 1 {
				name = "*." + name
			}
			doms = []dataplane.DomainRoute{{Name: name}}
			domains++
		}
		if remote && i%2 == 1 {
			w.r.SetRemote(Remote{AgentID: e.AgentID, Name: e.Name, Replicas: replicas,
				Routes: registry.Routes{Epoch: 1, Subnets: subnets, Domains: doms}})
			e = nil
		} else {
			w.reg.Register(e)
			w.reg.Advertise(e, 1, subnets, doms)
		}
		w.entries = append(w.entries, e)
		w.routes = append(w.routes, subnets)
		w.domains = append(w.domains, doms)
	}
	if domains != benchDomains || w.r.prefixes.Size() < benchAgents*(benchSubnets-2) {
		tb.Fatalf("world has %d domains, %d prefixes", domains, w.r.prefixes.Size())
	}
	for k := range 1024 {
		i := k * 9 % benchAgents
		// Alternately an agent's own /24 and its HA pair's /24 (two
		// candidates).
		p := w.routes[i][k%2*(benchSubnets-2)]
		w.ipHosts = append(w.ipHosts, p.Addr().Next().String())
		w.names = append(w.names, fmt.Sprintf("db%02d.site%d.contoso.local", k%100, k%benchDomains))
	}
	return w
}

func (w *benchWorld) run(b *testing.B, hosts []string) {
	dst := make([]Candidate, 0, 8)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = w.r.Lookup(dst[:0], hosts[i%len(hosts)])
		if len(dst) == 0 {
			b.Fatalf("Lookup(%q) found nobody", hosts[i%len(hosts)])
		}
		i++
	}
}

func BenchmarkLookupIP(b *testing.B) {
	w := newBenchWorld(b)
	w.run(b, w.ipHosts)
}

func BenchmarkLookupName(b *testing.B) {
	w := newBenchWorld(b)
	w.run(b, w.names)
}

// BenchmarkLookupIPRemote and BenchmarkLookupNameRemote are the lookups
// with half the agents connected to another replica.
func BenchmarkLookupIPRemote(b *testing.B) {
	w := newBenchWorldRemote(b, true)
	w.run(b, w.ipHosts)
}

func BenchmarkLookupNameRemote(b *testing.B) {
	w := newBenchWorldRemote(b, true)
	w.run(b, w.names)
}

// BenchmarkSetRemote measures one remote agent's change of presence (new
// routes, 4 of its 10 subnets changed), as the cluster's presence applies
// it.
func BenchmarkSetRemote(b *testing.B) {
	w := newBenchWorldRemote(b, true)
	const i = 4243
	id, name := fmt.Sprintf("agent-%05d", i), fmt.Sprintf("jump%05d", i)
	sets := [2][]netip.Prefix{w.routes[i], benchSubnetsOf(i, 4)}
	replicas := []Replica{{ID: "r-b", Name: "gw-b"}}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		w.r.SetRemote(Remote{AgentID: id, Name: name, Replicas: replicas, Routes: registry.Routes{Subnets: sets[n%2], Domains: w.domains[i]}})
	}
}

// BenchmarkLookupIPParallel shows how lookups scale across cores (they share
// the router's read lock).
func BenchmarkLookupIPParallel(b *testing.B) {
	w := newBenchWorld(b)
	b.ReportAllocs()
	b.ResetTimer() // b.Loop does this itself; RunParallel does not
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]Candidate, 0, 8)
		i := 0
		for pb.Next() {
			dst = w.r.Lookup(dst[:0], w.ipHosts[i%len(w.ipHosts)])
			i++
		}
	})
}

// BenchmarkReadvertise measures one agent's re-advertisement of its 10
// subnets (4 of them changed, now shared with the next agent) and its domain
// (changed), through the registry (which copies the routes) and the router.
func BenchmarkReadvertise(b *testing.B) {
	w := newBenchWorld(b)
	const i = 4242
	e := w.entries[i]
	sets := [2][]netip.Prefix{w.routes[i], benchSubnetsOf(i, 4)}
	doms := [2][]dataplane.DomainRoute{{{Name: "site424.contoso.local"}}, {{Name: "*.moved.contoso.local"}}}
	epoch := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		epoch++
		if !w.reg.Advertise(e, epoch, sets[epoch%2], doms[epoch%2]) {
			b.Fatal("advertisement not applied")
		}
	}
}
