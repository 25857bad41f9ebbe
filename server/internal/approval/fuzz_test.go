package approval

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzSeeds are the seeds of both fuzz targets, by file name: two
// comma-separated route lists (approved or token, then advertised or
// requested).
var fuzzSeeds = map[string][2]string{
	"inside":          {"10.0.0.0/8,contoso.local", "10.1.0.0/16,db.contoso.local"},
	"equal":           {"10.1.0.0/16,*.contoso.local", "10.1.9.9/16,*.contoso.local"},
	"wider":           {"10.1.0.0/16,db.contoso.local", "10.0.0.0/8,contoso.local"},
	"everything":      {"10.0.0.0/8,contoso.local", "0.0.0.0/0,com,*.local"},
	"wildcard-apex":   {"*.contoso.local", "contoso.local,*.contoso.local,a.b.contoso.local"},
	"suffix-no-label": {"contoso.local", "xcontoso.local,local"},
	"host-route":      {"192.0.2.7/32", "192.0.2.7/32,192.0.2.0/24"},
	"nothing":         {"", "10.0.0.0/8,a.test"},
	"token-broad":     {"0.0.0.0/0,com", "0.0.0.0/1,com,contoso.com"},
	"request-broad":   {"", "0.0.0.0/0,0.0.0.0/7,10.0.0.0/8,com,*.com,a.com"},
	"invalid":         {"a..b,10.0.0.0/33", "*,a.*.b,,::/0"},
	"upper":           {"Contoso.LOCAL", "DB.contoso.local"},
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	for _, target := range []string{"FuzzSplit", "FuzzForEnrollment"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, seed := range fuzzSeeds {
			path := filepath.Join(dir, name)
			want := "go test fuzz v1\nstring(" + strconv.Quote(seed[0]) + ")\nstring(" + strconv.Quote(seed[1]) + ")\n"
			if *updateCorpus {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != want {
				t.Errorf("%s missing or stale (run go test -run TestFuzzCorpus -update-corpus): %v", path, err)
			}
		}
	}
}

// fuzzSet parses the valid entries of a comma-separated list into a Set:
// what parses as a subnet is a subnet, what parses as a domain route a
// domain; the rest is dropped.
func fuzzSet(list string) Set {
	var subnets, domains []string
	for _, v := range strings.Split(list, ",") {
		if _, err := reach.ParseSubnet(v); err == nil {
			subnets = append(subnets, v)
		} else if _, err := reach.ParseDomain(v); err == nil {
			domains = append(domains, v)
		}
	}
	s, err := Parse(subnets[:min(len(subnets), MaxRoutes)], domains[:min(len(domains), MaxRoutes)])
	if err != nil {
		panic(err) // every entry was checked
	}
	return s
}

// fuzzAdvertisement reads a comma-separated list as an agent could
// advertise it: IPv4 prefixes as subnets, anything else as a domain (the
// codec would refuse some; the gateway must refuse them too).
func fuzzAdvertisement(list string) registry.Routes {
	var r registry.Routes
	for _, v := range strings.Split(list, ",") {
		if p, err := netip.ParsePrefix(v); err == nil && p.Addr().Is4() {
			r.Subnets = append(r.Subnets, p)
		} else {
			r.Domains = append(r.Domains, dataplane.DomainRoute{Name: v})
		}
	}
	return r
}

// FuzzSplit: the Matcher accepts an advertised route exactly when an
// approved route covers it by reach's definitions (SubnetCovers,
// Domain.CoversRoute), and Split partitions the advertisement in order; a
// Set's canonical form parses back to itself.
func FuzzSplit(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzSplit (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, approvedList, advertisedList string) {
		set := fuzzSet(approvedList)
		subnets, domains := set.Strings()
		if again, err := Parse(subnets, domains); err != nil || !again.Equal(set) {
			t.Fatalf("canonical %v %v parses to %+v, %v", subnets, domains, again, err)
		}
		m := Compile(set)
		adv := fuzzAdvertisement(advertisedList)
		acc, rej := m.Split(adv)
		if len(acc.Subnets)+len(rej.Subnets) != len(adv.Subnets) || len(acc.Domains)+len(rej.Domains) != len(adv.Domains) {
			t.Fatalf("split %+v into %+v and %+v", adv, acc, rej)
		}
		var ai, ri int
		for _, p := range adv.Subnets {
			want := slices.ContainsFunc(set.Subnets, func(a netip.Prefix) bool { return reach.SubnetCovers(a, p) })
			if want {
				if acc.Subnets[ai] != p {
					t.Fatalf("accepted subnets %v out of order at %v", acc.Subnets, p)
				}
				ai++
			} else {
				if rej.Subnets[ri] != p {
					t.Fatalf("%v accepted, no approved subnet covers it (%v)", p, set.Subnets)
				}
				ri++
			}
		}
		ai, ri = 0, 0
		for _, d := range adv.Domains {
			route, err := reach.ParseDomain(d.Name)
			want := err == nil && slices.ContainsFunc(set.Domains, func(a reach.Domain) bool { return a.CoversRoute(route) })
			if want {
				if acc.Domains[ai] != d {
					t.Fatalf("accepted domains %v out of order at %q", acc.Domains, d.Name)
				}
				ai++
			} else {
				if rej.Domains[ri] != d {
					t.Fatalf("%q accepted, no approved domain covers it (%v)", d.Name, set.Domains)
				}
				ri++
			}
		}
	})
}

// FuzzForEnrollment: an enrollment never widens its token's routes, never
// approves a route the request did not ask for (unless it asked for
// nothing and the token named routes), approves a broad route only from a
// token, and accounts for every requested route.
func FuzzForEnrollment(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzForEnrollment (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, tokenList, requestedList string) {
		token, requested := fuzzSet(tokenList), fuzzSet(requestedList)
		approved, dropped := ForEnrollment(token, requested)
		if !token.Empty() && requested.Empty() {
			if !approved.Equal(token) || len(dropped) != 0 {
				t.Fatalf("empty request: approved %+v, dropped %v; want the token's %+v", approved, dropped, token)
			}
			return
		}
		tm := Compile(token)
		for _, p := range approved.Subnets {
			if !slices.Contains(requested.Subnets, p) {
				t.Fatalf("%v approved, not requested", p)
			}
			if token.Empty() && BroadSubnet(p) {
				t.Fatalf("%v approved from a request alone", p)
			}
			if !token.Empty() && !tm.CoversSubnet(p) {
				t.Fatalf("%v approved outside the token's %v", p, token.Subnets)
			}
		}
		for _, d := range approved.Domains {
			if !slices.Contains(requested.Domains, d) {
				t.Fatalf("%v approved, not requested", d)
			}
			if token.Empty() && BroadDomain(d) {
				t.Fatalf("%v approved from a request alone", d)
			}
			if !token.Empty() && !tm.CoversDomain(d) {
				t.Fatalf("%v approved outside the token's %v", d, token.Domains)
			}
		}
		if n := len(approved.Subnets) + len(approved.Domains) + len(dropped); n != len(requested.Subnets)+len(requested.Domains) {
			t.Fatalf("%d requested routes, %d approved or dropped", len(requested.Subnets)+len(requested.Domains), n)
		}
	})
}
