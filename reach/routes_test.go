package reach

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/outposthq/outpost/dataplane"
)

// prefixes parses CIDRs.
func prefixes(t testing.TB, cidrs ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	return ps
}

func TestMatchDomain(t *testing.T) {
	table := Compile(Routes{Domains: []string{"contoso.local", "*.Fabrikam.Test", "bad..route", "*"}})
	tests := []struct {
		host string
		want bool
	}{
		{"contoso.local", true},
		{"db.contoso.local", true},
		{"a.b.contoso.local", true},
		{"xcontoso.local", false},
		{"contoso.local.evil", false},
		{"local", false},
		{"fabrikam.test", false}, // the wildcard covers subdomains only
		{"db.fabrikam.test", true},
		{"a.b.fabrikam.test", true},
		{"xfabrikam.test", false},
		{"bad..route", false},
		{"anything", false},
		{".contoso.local", false}, // no label before the dot
		{".fabrikam.test", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := table.MatchDomain(tc.host); got != tc.want {
			t.Errorf("MatchDomain(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
	if (&Table{}).MatchDomain("contoso.local") || (Domain{}).Covers("") || (Domain{}).Covers("x") {
		t.Error("an empty table or Domain covers a name")
	}
}

func TestParseDomain(t *testing.T) {
	tests := []struct {
		in   string
		want Domain
		str  string
	}{
		{"contoso.local", Domain{Name: "contoso.local"}, "contoso.local"},
		{"Contoso.LOCAL", Domain{Name: "contoso.local"}, "contoso.local"},
		{"*.Contoso.local", Domain{Name: "contoso.local", Wildcard: true}, "*.contoso.local"},
		{"localhost", Domain{Name: "localhost"}, "localhost"},
		{"_srv.x", Domain{Name: "_srv.x"}, "_srv.x"},
	}
	for _, tc := range tests {
		got, err := ParseDomain(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseDomain(%q) = %+v (%q), %v; want %+v (%q)", tc.in, got, got.String(), err, tc.want, tc.str)
		}
	}
	for _, in := range []string{"", "*.", "*", "a.*.b", "*a.b", "a..b", ".a", "a.", "\xff.x"} {
		_, err := ParseDomain(in)
		var iv *dataplane.InvalidFieldError
		if !errors.As(err, &iv) {
			t.Errorf("ParseDomain(%q): %v, want a *dataplane.InvalidFieldError", in, err)
		}
	}
}

func TestParseSubnet(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":   "10.0.0.0/8",
		"10.1.2.3/16":  "10.1.2.3/16", // host bits kept as written
		"0.0.0.0/0":    "0.0.0.0/0",
		"127.0.0.1/32": "127.0.0.1/32",
	} {
		got, err := ParseSubnet(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("ParseSubnet(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0", "10.0.0.0/33", " 10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104", "10.0.0.0/8x", "010.0.0.0/8"} {
		if p, err := ParseSubnet(in); err == nil {
			t.Errorf("ParseSubnet(%q) = %v, want an error", in, p)
		}
	}
}

func TestRoutesValidate(t *testing.T) {
	good := Routes{Subnets: prefixes(t, "10.0.0.0/8", "127.0.0.1/32", "0.0.0.0/0"), Domains: []string{"contoso.local", "*.contoso.local", "LOCALHOST"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]Routes{
		"IPv6 subnet":        {Subnets: prefixes(t, "2001:db8::/32")},
		"IPv4-mapped subnet": {Subnets: prefixes(t, "::ffff:10.0.0.0/104")},
		"zero subnet":        {Subnets: []netip.Prefix{{}}},
		"empty domain":       {Domains: []string{""}},
		"bare wildcard":      {Domains: []string{"*."}},
		"inner wildcard":     {Domains: []string{"a.*.b"}},
		"empty label":        {Domains: []string{"a..b"}},
	} {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, r)
		}
	}
	// Invalid entries are dropped, never widened.
	table := Compile(Routes{Subnets: prefixes(t, "::/0", "10.1.2.3/16")})
	if len(table.subnets) != 1 || table.subnets[0] != netip.MustParsePrefix("10.1.0.0/16") {
		t.Fatalf("compiled subnets %v, want [10.1.0.0/16]", table.subnets)
	}
}

func TestDomainCoversRoute(t *testing.T) {
	tests := []struct {
		approved, advertised string
		want                 bool
	}{
		{"contoso.local", "contoso.local", true},
		{"contoso.local", "*.contoso.local", true},
		{"contoso.local", "db.contoso.local", true},
		{"contoso.local", "*.db.contoso.local", true},
		{"contoso.local", "local", false},
		{"contoso.local", "xcontoso.local", false},
		{"contoso.local", "*.local", false},
		{"*.contoso.local", "contoso.local", false},
		{"*.contoso.local", "*.contoso.local", true},
		{"*.contoso.local", "db.contoso.local", true},
		{"*.contoso.local", "*.db.contoso.local", true},
		{"db.contoso.local", "contoso.local", false},
		{"com", "contoso.com", true},
	}
	for _, tc := range tests {
		a, err := ParseDomain(tc.approved)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseDomain(tc.advertised)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.CoversRoute(r); got != tc.want {
			t.Errorf("%q.CoversRoute(%q) = %v, want %v", tc.approved, tc.advertised, got, tc.want)
		}
	}
	if (Domain{}).CoversRoute(Domain{}) || (Domain{Name: "a.b"}).CoversRoute(Domain{}) {
		t.Error("a zero Domain covers or is covered")
	}
}

func TestSubnetCovers(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.0.0.0/8", "10.0.0.0/8", true},
		{"10.9.9.9/8", "10.1.2.3/32", true}, // host bits ignored
		{"10.1.0.0/16", "10.0.0.0/8", false},
		{"10.0.0.0/8", "11.0.0.0/16", false},
		{"0.0.0.0/0", "192.168.0.0/16", true},
		{"10.0.0.0/24", "10.0.1.0/24", false},
	}
	for _, tc := range tests {
		if got := SubnetCovers(netip.MustParsePrefix(tc.outer), netip.MustParsePrefix(tc.inner)); got != tc.want {
			t.Errorf("SubnetCovers(%s, %s) = %v, want %v", tc.outer, tc.inner, got, tc.want)
		}
	}
	if SubnetCovers(netip.Prefix{}, netip.MustParsePrefix("10.0.0.0/8")) ||
		SubnetCovers(netip.MustParsePrefix("::/0"), netip.MustParsePrefix("::1/128")) {
		t.Error("an invalid or IPv6 prefix covers")
	}
}
