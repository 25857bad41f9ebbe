package detect

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func hostname(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func TestDomain(t *testing.T) {
	cases := []struct {
		name       string
		resolvConf string // file under testdata/
		host       string
		want       string // "" when nothing is found
		source     string
		why        string // part of the not-found error
	}{
		{"first search domain", "search.conf", "vm", "corp.example.test", "resolv.conf search", ""},
		{"domain line, canonicalized", "domain.conf", "vm", "contoso.local", "resolv.conf domain", ""},
		{"last search wins over earlier domain", "last-wins-search.conf", "vm", "finance.contoso.test", "resolv.conf search", ""},
		{"last domain wins over earlier search", "last-wins-domain.conf", "vm", "second.contoso.test", "resolv.conf domain", ""},
		{"comments and blanks", "comments.conf", "vm", "spaced.contoso.test", "resolv.conf search", ""},
		{"kubernetes", "kubernetes.conf", "vm", "default.svc.cluster.local", "resolv.conf search", ""},
		{"cloud .internal", "aws.conf", "vm", "eu-west-1.compute.internal", "resolv.conf search", ""},
		{"no line: hostname", "none.conf", "web01.Branch.Contoso.Test.", "branch.contoso.test", "hostname", ""},
		{"localdomain: hostname", "localdomain.conf", "db.corp.test", "corp.test", "hostname", ""},
		{"systemd root search: hostname", "systemd-root.conf", "db.corp.test", "corp.test", "hostname", ""},
		{"missing file: hostname", "does-not-exist.conf", "db.corp.test", "corp.test", "hostname", ""},
		{"empty last search line: hostname", "empty-search.conf", "db.corp.test", "corp.test", "hostname", ""},

		{"nothing anywhere", "none.conf", "vm", "", "", `hostname "vm" has no domain part`},
		{"single label in resolv.conf", "lan.conf", "vm", "", "", "single label"},
		{"home.arpa", "home-arpa.conf", "vm", "", "", ".arpa is a special-use name"},
		{"localdomain, localhost.localdomain", "localdomain.conf", "localhost.localdomain", "", "", "single label"},
		{"host name is an IP address", "none.conf", "10.1.2.3", "", "", "numeric"},
		{"host under .localdomain", "none.conf", "a.b.localdomain", "", "", ".localdomain is a special-use name"},
		{"systemd root, no host domain", "systemd-root.conf", "vm", "", "", "names no domain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Domain(Options{ResolvConf: filepath.Join("testdata", tc.resolvConf), Hostname: hostname(tc.host)})
			if tc.want == "" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("got %+v, %v; want ErrNotFound mentioning %q", got, err, tc.why)
				}
				return
			}
			if err != nil || got.Domain != tc.want || got.Source != tc.source {
				t.Fatalf("got %+v, %v; want %q from %q", got, err, tc.want, tc.source)
			}
		})
	}
}

func TestDomainHostnameError(t *testing.T) {
	_, err := Domain(Options{
		ResolvConf: filepath.Join("testdata", "none.conf"),
		Hostname:   func() (string, error) { return "", errors.New("no uts namespace") },
	})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no uts namespace") {
		t.Fatalf("got %v", err)
	}
}

func TestResolvConfDomain(t *testing.T) {
	cases := []struct{ in, name, keyword string }{
		{"", "", ""},
		{"search a.test b.test\n", "a.test", "search"},
		{"domain x.test.\n", "x.test", "domain"},
		{"search a.test\ndomain b.test\nsearch c.test\n", "c.test", "search"},
		{"#search a.test\n;domain b.test\n", "", ""},
		{"searchx a.test\n", "", ""},
		{"search\n", "", "search"},
		{"nameserver 1.1.1.1\r\nsearch crlf.test\r\n", "crlf.test", "search"},
	}
	for _, tc := range cases {
		name, keyword, err := ResolvConfDomain(strings.NewReader(tc.in))
		if err != nil || name != tc.name || keyword != tc.keyword {
			t.Errorf("%q: got %q %q %v, want %q %q", tc.in, name, keyword, err, tc.name, tc.keyword)
		}
	}
}

func TestPlausible(t *testing.T) {
	good := map[string]string{
		"contoso.local":         "contoso.local",
		"Corp.Internal.":        "corp.internal",
		"ec2.internal":          "ec2.internal",
		"finance.contoso.local": "finance.contoso.local",
		"lab.test":              "lab.test",
		"a.b.c.d.e.example.co":  "a.b.c.d.e.example.co",
	}
	for in, want := range good {
		if got, err := Plausible(in); err != nil || got != want {
			t.Errorf("Plausible(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                                "empty",
		".":                               "empty",
		"local":                           "single label",
		"lan":                             "single label",
		"home":                            "single label",
		"internal":                        "single label",
		"localdomain":                     "single label",
		"in-addr.arpa":                    "special-use",
		"10.in-addr.arpa":                 "special-use",
		"ip6.arpa":                        "special-use",
		"home.arpa":                       "special-use",
		"localhost":                       "single label",
		"foo.localhost":                   "special-use",
		"host.invalid":                    "special-use",
		"corp.example":                    "special-use",
		"example.com":                     "documentation",
		"EXAMPLE.org.":                    "documentation",
		"10.0.0.1":                        "IP address",
		"::1":                             "IP address",
		"1.2.3":                           "numeric",
		"*.contoso.local":                 "wildcard",
		"a..b":                            "empty label",
		strings.Repeat("a", 64) + ".test": "longer than 63",
	}
	for in, why := range bad {
		_, err := Plausible(in)
		var ie *ImplausibleError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), why) {
			t.Errorf("Plausible(%q) = %v; want an *ImplausibleError mentioning %q", in, err, why)
		}
	}
}
