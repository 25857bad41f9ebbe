package origin

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/fuzzcorpus"
)

// fuzzSeed is one input of FuzzParse: allowed_origins as newline-separated
// entries, and allow_any_origin.
type fuzzSeed struct {
	list     string
	allowAny bool
}

// fuzzSeeds are FuzzParse's seeds, by corpus file name.
var fuzzSeeds = map[string]fuzzSeed{
	"one":              {"https://app.example.com", false},
	"several":          {"https://app.example.com\nhttp://localhost:3000\nhttps://[2001:db8::1]:8443", false},
	"default-port":     {"HTTPS://App.Example.COM:443", false},
	"any":              {"*", true},
	"any-unconfirmed":  {"*\nhttps://app.example.com", false},
	"confirm-only":     {"https://app.example.com", true},
	"null":             {"null", false},
	"trailing-slash":   {"https://app.example.com/", false},
	"userinfo":         {"https://user@app.example.com", false},
	"ipv6-zone":        {"https://[fe80::1%25eth0]", false},
	"bracketed-ipv4":   {"https://[127.0.0.1]", false},
	"port-zero":        {"https://app.example.com:0", false},
	"non-ascii":        {"https://bücher.example", false},
	"empty-entry":      {"https://app.example.com\n", false},
	"scheme-only":      {"https://", false},
	"query-fragment":   {"https://app.example.com?#", false},
	"ipv4-mapped-ipv6": {"https://[::ffff:1.2.3.4]", false},
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	files := map[string][]any{}
	for name, s := range fuzzSeeds {
		files[name] = []any{s.list, s.allowAny}
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz"), fuzzcorpus.Seeds{"FuzzParse": files})
}

// FuzzParse parses an allowed_origins list and checks what a Policy
// promises: every listed origin has a stable canonical form without path,
// query or user information, and is allowed, as is any well-formed origin
// on its own gateway; nothing panics.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.list, s.allowAny)
	}
	f.Fuzz(func(t *testing.T, list string, allowAny bool) {
		entries := strings.Split(list, "\n")
		p, err := Parse(entries, allowAny)
		for _, e := range entries {
			c, cerr := Canonical(e)
			if cerr != nil {
				if err == nil && e != Any {
					t.Fatalf("Parse accepted %q, which Canonical refuses: %v", e, cerr)
				}
				continue
			}
			checkCanonical(t, e, c)
			// Same-origin holds whatever the policy.
			if err := p.Check(e, e); err != nil {
				t.Fatalf("Check(%q) on its own gateway: %v", e, err)
			}
			if err == nil {
				if err := p.Check(e, "https://gateway.invalid"); err != nil {
					t.Fatalf("listed %q refused: %v", e, err)
				}
				if _, ok := slices.BinarySearch(p.Allowed(), c); !ok && !p.any {
					t.Fatalf("listed %q missing from Allowed() %q", c, p.Allowed())
				}
			}
		}
		if err == nil && p.any != (allowAny && slices.Contains(entries, Any)) {
			t.Fatalf("any = %v for %q, %v", p.any, entries, allowAny)
		}
	})
}

// checkCanonical checks the canonical form c of origin e.
func checkCanonical(t *testing.T, e, c string) {
	t.Helper()
	again, err := Canonical(c)
	if err != nil || again != c {
		t.Fatalf("Canonical(%q) = %q, but Canonical(%q) = %q, %v", e, c, c, again, err)
	}
	scheme, rest, ok := strings.Cut(c, "://")
	if !ok || scheme != "http" && scheme != "https" || rest == "" || strings.ContainsAny(rest, "/?#@% ") {
		t.Fatalf("Canonical(%q) = %q: not scheme://host[:port]", e, c)
	}
	if strings.ToLower(c) != c {
		t.Fatalf("Canonical(%q) = %q: not lowercase", e, c)
	}
	if strings.HasSuffix(c, ":443") && scheme == "https" || strings.HasSuffix(c, ":80") && scheme == "http" {
		t.Fatalf("Canonical(%q) = %q keeps the default port", e, c)
	}
}
