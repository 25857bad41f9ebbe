package approval

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
)

func mustParse(t testing.TB, subnets, domains []string) Set {
	t.Helper()
	s, err := Parse(subnets, domains)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseCanonical(t *testing.T) {
	s := mustParse(t, []string{"10.1.2.3/16", "10.1.0.0/16", "192.0.2.0/24"}, []string{"Contoso.Local", "*.contoso.local", "contoso.local"})
	subnets, domains := s.Strings()
	if !slices.Equal(subnets, []string{"10.1.0.0/16", "192.0.2.0/24"}) {
		t.Errorf("subnets %v", subnets)
	}
	if !slices.Equal(domains, []string{"contoso.local", "*.contoso.local"}) {
		t.Errorf("domains %v", domains)
	}
	if !s.Equal(mustParse(t, subnets, domains)) {
		t.Error("the canonical form does not parse back to itself")
	}
	if sub, dom := (Set{}).Strings(); sub == nil || dom == nil || !(Set{}).Empty() {
		t.Error("the empty set's strings are nil, or it is not Empty")
	}
}

func TestParseRefuses(t *testing.T) {
	many := make([]string, MaxRoutes+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	tests := []struct {
		name             string
		subnets, domains []string
		field            string
	}{
		{"ipv6", []string{"2001:db8::/32"}, nil, "subnets[0]"},
		{"bare address", []string{"10.0.0.0/8", "10.0.0.1"}, nil, "subnets[1]"},
		{"bad domain", nil, []string{"a..b"}, "domains[0]"},
		{"inner wildcard", nil, []string{"ok.test", "a.*.b"}, "domains[1]"},
		{"too many subnets", many, nil, "subnets"},
		{"too many domains", nil, make([]string, MaxRoutes+1), "domains"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.subnets, tc.domains)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("Parse: %v, want an InputError on %s", err, tc.field)
			}
		})
	}
	if _, err := Parse(many[:MaxRoutes], nil); err != nil {
		t.Fatalf("exactly %d subnets: %v", MaxRoutes, err)
	}
}

func TestMatcherSplit(t *testing.T) {
	m := Compile(mustParse(t, []string{"10.1.0.0/16", "192.0.2.7/32"}, []string{"contoso.local", "*.fabrikam.test"}))
	adv := registry.Routes{
		Epoch: 7,
		Subnets: []netip.Prefix{
			netip.MustParsePrefix("10.1.2.0/24"),  // inside
			netip.MustParsePrefix("10.1.0.0/16"),  // equal
			netip.MustParsePrefix("10.1.9.9/16"),  // equal, host bits
			netip.MustParsePrefix("10.0.0.0/8"),   // wider
			netip.MustParsePrefix("0.0.0.0/0"),    // everything
			netip.MustParsePrefix("192.0.2.7/32"), // equal host route
			netip.MustParsePrefix("192.0.2.0/24"), // wider than the host route
			netip.MustParsePrefix("10.2.0.0/24"),  // beside
		},
		Domains: []dataplane.DomainRoute{
			{Name: "contoso.local"},
			{Name: "*.contoso.local"},
			{Name: "db.contoso.local", AutoDetected: true},
			{Name: "local"},
			{Name: "xcontoso.local"},
			{Name: "fabrikam.test"},
			{Name: "*.fabrikam.test"},
			{Name: "a.b.fabrikam.test"},
			{Name: "com"},
		},
	}
	acc, rej := m.Split(adv)
	str := func(r registry.Routes) (s []string) {
		for _, p := range r.Subnets {
			s = append(s, p.String())
		}
		for _, d := range r.Domains {
			s = append(s, d.Name)
		}
		return s
	}
	if want := []string{"10.1.2.0/24", "10.1.0.0/16", "10.1.9.9/16", "192.0.2.7/32", "contoso.local", "*.contoso.local", "db.contoso.local", "*.fabrikam.test", "a.b.fabrikam.test"}; !slices.Equal(str(acc), want) {
		t.Errorf("accepted %v\nwant %v", str(acc), want)
	}
	if want := []string{"10.0.0.0/8", "0.0.0.0/0", "192.0.2.0/24", "10.2.0.0/24", "local", "xcontoso.local", "fabrikam.test", "com"}; !slices.Equal(str(rej), want) {
		t.Errorf("rejected %v\nwant %v", str(rej), want)
	}
	if acc.Epoch != 7 || rej.Epoch != 7 || !acc.Domains[2].AutoDetected {
		t.Errorf("epochs %d/%d or the auto-detected flag lost", acc.Epoch, rej.Epoch)
	}
	var none *Matcher
	if acc, rej := none.Split(adv); len(acc.Subnets)+len(acc.Domains) != 0 || len(rej.Subnets) != len(adv.Subnets) {
		t.Error("a nil Matcher accepts")
	}
	if acc, rej := AcceptAll(adv); len(acc.Subnets) != len(adv.Subnets) || len(rej.Subnets)+len(rej.Domains) != 0 {
		t.Error("AcceptAll refuses")
	}
}

// The Matcher agrees with reach's definitions of covering, route by route.
func TestMatcherAgreesWithReach(t *testing.T) {
	set := mustParse(t, []string{"10.0.0.0/8", "10.1.0.0/16", "172.16.5.0/24"}, []string{"a.test", "*.b.test", "c.d.test"})
	m := Compile(set)
	for _, s := range []string{"10.0.0.0/7", "10.0.0.0/8", "10.200.0.0/16", "172.16.5.128/25", "172.16.4.0/23", "11.0.0.0/8"} {
		p := netip.MustParsePrefix(s)
		want := slices.ContainsFunc(set.Subnets, func(a netip.Prefix) bool { return reach.SubnetCovers(a, p) })
		if got := m.CoversSubnet(p); got != want {
			t.Errorf("CoversSubnet(%s) = %v, want %v", s, got, want)
		}
	}
	for _, s := range []string{"a.test", "*.a.test", "x.a.test", "b.test", "*.b.test", "x.b.test", "d.test", "c.d.test", "*.c.d.test", "test"} {
		d, _ := reach.ParseDomain(s)
		want := slices.ContainsFunc(set.Domains, func(a reach.Domain) bool { return a.CoversRoute(d) })
		if got := m.CoversDomain(d); got != want {
			t.Errorf("CoversDomain(%s) = %v, want %v", s, got, want)
		}
	}
}
