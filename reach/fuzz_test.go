package reach

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outposthq/outpost/dataplane"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzSeeds returns the seed inputs of each fuzz target, by file name: the
// cases of the table tests that matter most, and a few hostile ones.
func fuzzSeeds() map[string]map[string][]any {
	return map[string]map[string][]any{
		"FuzzParseSubnet": {
			"ipv4":        {"10.0.0.0/8"},
			"host-bits":   {"10.1.2.3/16"},
			"everything":  {"0.0.0.0/0"},
			"loopback-32": {"127.0.0.1/32"},
			"ipv6":        {"2001:db8::/32"},
			"mapped":      {"::ffff:10.0.0.0/104"},
			"too-long":    {"10.0.0.0/33"},
			"bare":        {"10.0.0.1"},
			"space":       {" 10.0.0.0/8"},
		},
		"FuzzParseDomain": {
			"name":              {"contoso.local", "db.contoso.local"},
			"name-itself":       {"contoso.local", "contoso.local"},
			"upper":             {"Contoso.LOCAL", "a.b.contoso.local"},
			"suffix-not-label":  {"contoso.local", "xcontoso.local"},
			"wildcard":          {"*.fabrikam.test", "db.fabrikam.test"},
			"wildcard-itself":   {"*.fabrikam.test", "fabrikam.test"},
			"wildcard-leading":  {"*.fabrikam.test", ".fabrikam.test"},
			"bare-wildcard":     {"*.", "x"},
			"inner-wildcard":    {"a.*.b", "a.x.b"},
			"empty-label":       {"a..b", "a..b"},
			"trailing-dot":      {"contoso.local.", "contoso.local"},
			"not-utf8":          {"\xff.test", "\xff.test"},
			"single-label":      {"localhost", "localhost"},
			"longer-than-route": {"b.c", "a.b.c.b.c"},
		},
		"FuzzGuardCheck": {
			"in-subnet":           {"10.0.0.9:22", "10.0.0.0/24", "", false},
			"outside":             {"10.0.1.9:22", "10.0.0.0/24", "", false},
			"loopback-everything": {"127.0.0.1:22", "0.0.0.0/0", "", false},
			"loopback-explicit":   {"127.0.0.1:22", "127.0.0.0/8", "127.0.0.1", false},
			"mapped-loopback":     {"[::ffff:127.0.0.1]:22", "0.0.0.0/0", "", true},
			"metadata-16":         {"169.254.169.254:80", "169.254.0.0/16", "", true},
			"metadata-explicit":   {"169.254.169.254:80", "169.254.169.254/32", "", false},
			"azure":               {"168.63.129.16:80", "168.63.0.0/16", "", true},
			"alibaba":             {"100.100.100.200:80", "100.64.0.0/10", "", false},
			"oracle":              {"192.0.0.192:80", "192.0.0.192/32", "", false},
			"ipv6-metadata":       {"[fd00:ec2::254]:80", "0.0.0.0/0", "", true},
			"ipv6-domain":         {"[2001:db8::1]:22", "", "", true},
			"ipv6-zoned":          {"[fe80::1%eth0]:22", "", "", true},
			"own-wide":            {"10.0.0.5:22", "10.0.0.0/8", "10.0.0.5", false},
			"own-explicit":        {"10.0.0.5:22", "10.0.0.5/32", "10.0.0.5", true},
			"own-ipv6":            {"[2001:db8::5]:22", "", "2001:db8::5", true},
			"nonsense":            {"nonsense", "10.0.0.0/8", "", false},
			"mapped-subnet":       {"10.0.0.1:22", "::ffff:10.0.0.0/104", "", false},
			"unspecified-domain":  {"0.0.0.0:22", "0.0.0.0/0", "", true},
		},
	}
}

// corpusFile renders one seed in the "go test fuzz v1" format.
func corpusFile(values []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		fmt.Fprintf(&b, "%T(%#v)\n", v, v)
	}
	return b.Bytes()
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range fuzzSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, values := range seeds {
			path := filepath.Join(dir, name)
			want := corpusFile(values)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s missing or stale (run go test -run TestFuzzCorpus -update-corpus): %v", path, err)
			}
		}
	}
}

// FuzzParseSubnet: an accepted subnet is a valid IPv4 prefix that prints
// back to itself, passes Validate and compiles to its masked form; the
// table it makes allows its addresses, but a special one only when the
// subnet lies inside that special range.
func FuzzParseSubnet(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParseSubnet (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubnet(s)
		if err != nil {
			if p.IsValid() {
				t.Fatalf("ParseSubnet(%q) = %v with error %v", s, p, err)
			}
			return
		}
		if !p.Addr().Is4() || p.Addr().Is4In6() {
			t.Fatalf("ParseSubnet(%q) = %v, not IPv4", s, p)
		}
		if again, err := ParseSubnet(p.String()); err != nil || again != p {
			t.Fatalf("ParseSubnet(%q) = %v, %v; want %v", p.String(), again, err, p)
		}
		r := Routes{Subnets: []netip.Prefix{p}}
		if err := r.Validate(); err != nil {
			t.Fatalf("Validate after ParseSubnet(%q): %v", s, err)
		}
		table := Compile(r)
		if len(table.subnets) != 1 || table.subnets[0] != p.Masked() {
			t.Fatalf("Compile(%v) = %v", p, table.subnets)
		}
		// The subnet's first and last addresses are allowed unless they lie
		// in a special range the subnet is not inside.
		first := p.Masked().Addr()
		last := first
		for i := p.Bits(); i < 32; i++ {
			b := last.As4()
			b[i/8] |= 0x80 >> (i % 8)
			last = netip.AddrFrom4(b)
		}
		for _, a := range []netip.Addr{first, last} {
			want := true
			if sr, ok := staticSpecial(a); ok {
				want = sr.prefix.Contains(first) && p.Bits() >= sr.prefix.Bits()
			}
			if allowed := table.Check(netip.AddrPortFrom(a, 1), false) == nil; allowed != want {
				t.Fatalf("%v: %v allowed = %v, want %v", p, a, allowed, want)
			}
		}
	})
}

// coversByLabels is the router's way to match a host name against a domain
// route (server/internal/routing): the name itself for a plain route, then
// every suffix that follows a dot after a non-empty prefix.
func coversByLabels(d Domain, host string) bool {
	if host == d.Name && !d.Wildcard {
		return true
	}
	for i := 1; i < len(host); i++ {
		if host[i] == '.' && host[i+1:] == d.Name {
			return true
		}
	}
	return false
}

// FuzzParseDomain: ParseDomain accepts what the wire grammar accepts, its
// canonical form parses back to itself, and a table holding the route
// matches a host exactly when Domain.Covers and the router's label walk do.
func FuzzParseDomain(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParseDomain (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, route, host string) {
		d, err := ParseDomain(route)
		canonical, werr := dataplane.ValidateDomainRoute(route)
		table := Compile(Routes{Domains: []string{route}})
		if err != nil || werr != nil {
			if (err == nil) != (werr == nil) {
				t.Fatalf("ParseDomain(%q): %v; ValidateDomainRoute: %v", route, err, werr)
			}
			if table.MatchDomain(host) || (Routes{Domains: []string{route}}).Validate() == nil {
				t.Fatalf("invalid route %q is used", route)
			}
			return
		}
		if d.String() != canonical || d.Name == "" || strings.HasPrefix(d.Name, "*") {
			t.Fatalf("ParseDomain(%q) = %+v (%q), want %q", route, d, d.String(), canonical)
		}
		if again, err := ParseDomain(d.String()); err != nil || again != d {
			t.Fatalf("ParseDomain(%q) = %+v, %v; want %+v", d.String(), again, err, d)
		}
		covers := d.Covers(host)
		if table.MatchDomain(host) != covers {
			t.Fatalf("route %q, host %q: MatchDomain %v, Covers %v", route, host, !covers, covers)
		}
		if want := coversByLabels(d, host); covers != want {
			t.Fatalf("route %q, host %q: Covers %v, label walk %v", route, host, covers, want)
		}
		if covers && d.Wildcard && host == d.Name {
			t.Fatalf("wildcard %q covers its own domain", route)
		}
	})
}

// FuzzGuardCheck drives the guard's classification of a dialed address,
// with a table of one subnet and one address of this host: it must agree
// with Table.Check, never allow a special address that no route opens
// explicitly, and never allow more without a domain than with one.
func FuzzGuardCheck(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzGuardCheck (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, address, subnet, own string, domain bool) {
		var r Routes
		if p, err := netip.ParsePrefix(subnet); err == nil {
			r.Subnets = []netip.Prefix{p}
		}
		table := Compile(r)
		if a, err := netip.ParseAddr(own); err == nil {
			table = table.WithOwnAddrs([]netip.Addr{a})
		}
		g := &guard{table: table, domain: domain}
		err := g.check(t.Context(), "tcp", address, nil)
		var refused *RefusedError
		ap, perr := netip.ParseAddrPort(address)
		if perr != nil {
			if err == nil || errors.As(err, &refused) {
				t.Fatalf("check(%q) = %v for an unparsable address", address, err)
			}
			return
		}
		ref := table.Check(ap, domain)
		if (err == nil) != (ref == nil) {
			t.Fatalf("check(%q) = %v, Check = %v", address, err, ref)
		}
		a := ap.Addr().Unmap().WithZone("")
		if ref != nil {
			if !errors.As(err, &refused) || *refused != *ref || ref.Addr != netip.AddrPortFrom(a, ap.Port()) {
				t.Fatalf("check(%q) = %v, Check = %+v", address, err, ref)
			}
			if !strings.HasPrefix(ref.Error(), "target "+ref.Addr.String()+" is ") {
				t.Fatalf("reason %q", ref.Error())
			}
			if g.allRefused() == nil {
				t.Fatal("allRefused is nil after a refusal")
			}
		}
		if ref == nil && !domain && table.Check(ap, true) != nil {
			t.Fatalf("%v allowed without a domain but refused with one", ap)
		}
		if sr, ok := table.special(a); ok {
			explicit := false
			for _, s := range table.subnets {
				explicit = explicit || (s.Contains(a) && sr.prefix.Contains(s.Addr()) && s.Bits() >= sr.prefix.Bits())
			}
			if (ref == nil) != explicit {
				t.Fatalf("%v in %s (%v): allowed %v, opened explicitly %v", a, sr.what, sr.prefix, ref == nil, explicit)
			}
			if Compile(Routes{Subnets: prefixes(t, "0.0.0.0/0")}).WithOwnAddrs(table.ownAddrs()).Check(ap, true) == nil {
				t.Fatalf("0.0.0.0/0 and a domain open %v (%s)", a, sr.what)
			}
		} else if a.Is6() && (ref == nil) != domain {
			t.Fatalf("IPv6 %v: allowed %v, domain %v", a, ref == nil, domain)
		}
	})
}

// ownAddrs returns the addresses t was told are this host's and kept.
func (t *Table) ownAddrs() []netip.Addr {
	var addrs []netip.Addr
	for _, r := range t.own {
		addrs = append(addrs, r.prefix.Addr())
	}
	return addrs
}
