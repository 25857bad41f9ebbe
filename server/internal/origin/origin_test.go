package origin

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestOriginCanonical(t *testing.T) {
	good := map[string]string{
		"https://app.example.com":            "https://app.example.com",
		"HTTPS://App.Example.COM":            "https://app.example.com",
		"https://app.example.com:443":        "https://app.example.com",
		"http://app.example.com:80":          "http://app.example.com",
		"http://app.example.com:443":         "http://app.example.com:443",
		"https://app.example.com:8443":       "https://app.example.com:8443",
		"http://127.0.0.1:8080":              "http://127.0.0.1:8080",
		"https://[2001:DB8:0::1]":            "https://[2001:db8::1]",
		"https://[::1]:7171":                 "https://[::1]:7171",
		"https://xn--bcher-kva.example":      "https://xn--bcher-kva.example",
		"https://under_score.example":        "https://under_score.example",
		"https://localhost":                  "https://localhost",
		"https://a-b.c-d.example:65535":      "https://a-b.c-d.example:65535",
		"http://gw.example.test:7171":        "http://gw.example.test:7171",
		"https://" + strings.Repeat("a", 63): "https://" + strings.Repeat("a", 63),
	}
	for in, want := range good {
		got, err := Canonical(in)
		if err != nil || got != want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, err, want)
		}
		if again, err := Canonical(got); err != nil || again != got {
			t.Errorf("Canonical(%q) is not canonical: %q, %v", got, again, err)
		}
	}
	bad := []string{
		"", "null", "NULL", "*", "app.example.com", "//app.example.com", "ftp://app.example.com",
		"ws://app.example.com", "https:app.example.com", "https://", "https://:443",
		"https://app.example.com/", "https://app.example.com/path", "https://app.example.com?q",
		"https://app.example.com?", "https://app.example.com#f", "https://app.example.com#",
		"https://user@app.example.com", "https://user:pw@app.example.com",
		"https://app.example.com:", "https://app.example.com:0", "https://app.example.com:65536",
		"https://app.example.com:08443", "https://app.example.com:-1", "https://app.example.com:x",
		" https://app.example.com", "https://app.example.com ", "https://app example.com",
		"https://bücher.example", "https://a%2eb.example", "https://app..example.com",
		"https://.app.example.com", "https://app.example.com.", "https://" + strings.Repeat("a", 64),
		"https://[fe80::1%25eth0]", "https://[127.0.0.1]", "https://::1", "https://[::ffff:1.2.3.4]",
		"https://[app.example.com]", "https://app!.example.com", "https://app\\.example.com",
		"https://" + strings.Repeat("a.", 127) + "a", // 255 bytes
	}
	for _, in := range bad {
		if got, err := Canonical(in); err == nil {
			t.Errorf("Canonical(%q) = %q, want an error", in, got)
		} else if !strings.Contains(err.Error(), "origin") {
			t.Errorf("Canonical(%q): error %q does not say what it checked", in, err)
		}
	}
}

func TestOriginParse(t *testing.T) {
	p, err := Parse([]string{"https://b.example", "HTTPS://A.example:443", "https://b.example"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Allowed(); !slices.Equal(got, []string{"https://a.example", "https://b.example"}) {
		t.Errorf("Allowed() = %q", got)
	}
	if p, err := Parse(nil, false); err != nil || len(p.Allowed()) != 0 {
		t.Errorf("empty list: %v, %v", p.Allowed(), err)
	}
	if p, err := Parse([]string{"*", "https://a.example"}, true); err != nil || !slices.Equal(p.Allowed(), []string{"*", "https://a.example"}) {
		t.Errorf("any: %v, %v", p, err)
	}
	for _, tc := range []struct {
		list     []string
		allowAny bool
		want     string
	}{
		{[]string{"*"}, false, "allow_any_origin"},
		{[]string{"https://a.example", "*"}, false, "allow_any_origin"},
		{[]string{"https://a.example"}, true, `does not hold "*"`},
		{nil, true, `does not hold "*"`},
		{[]string{"https://a.example", "https://a.example/"}, false, `"https://a.example/"`},
		{[]string{"null"}, false, "null"},
	} {
		if _, err := Parse(tc.list, tc.allowAny); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q, %v): %v, want an error containing %q", tc.list, tc.allowAny, err, tc.want)
		}
	}
}

func TestOriginCheck(t *testing.T) {
	const self = "https://gw.example.com:7171"
	listed, err := Parse([]string{"https://app.example.com", "http://localhost:3000"}, false)
	if err != nil {
		t.Fatal(err)
	}
	anyOrigin, err := Parse([]string{"*"}, true)
	if err != nil {
		t.Fatal(err)
	}
	var zero *Policy // the default: the gateway's own origin only
	cases := []struct {
		origin                string
		zero, listed, anyOrig bool
	}{
		{"", true, true, true}, // not a browser
		{"https://gw.example.com:7171", true, true, true},
		{"https://GW.example.com:7171", true, true, true},
		{"https://gw.example.com", false, false, true}, // another port: another origin
		{"http://gw.example.com:7171", false, false, true},
		{"https://app.example.com", false, true, true},
		{"https://app.example.com:443", false, true, true},
		{"https://app.example.com:8443", false, false, true},
		{"http://app.example.com", false, false, true},
		{"http://localhost:3000", false, true, true},
		{"https://evil.example", false, false, true},
		{"null", false, false, true},
		{"https://app.example.com/", false, false, true},
		{"garbage", false, false, true},
	}
	for _, tc := range cases {
		for _, p := range []struct {
			name   string
			policy *Policy
			want   bool
		}{{"default", zero, tc.zero}, {"default value", &Policy{}, tc.zero}, {"listed", listed, tc.listed}, {"any", anyOrigin, tc.anyOrig}} {
			err := p.policy.Check(tc.origin, self)
			if (err == nil) != p.want {
				t.Errorf("%s: Check(%q) = %v, want allowed %v", p.name, tc.origin, err, p.want)
			}
			if err != nil && !errors.Is(err, ErrNotAllowed) {
				t.Errorf("%s: Check(%q) = %v, not ErrNotAllowed", p.name, tc.origin, err)
			}
		}
	}
	// The gateway reached as https on the default port.
	if err := zero.Check("https://gw.example.com", "https://gw.example.com:443"); err != nil {
		t.Errorf("default port: %v", err)
	}
	if err := zero.Check("https://gw.example.com", "https://gw.example.com"); err != nil {
		t.Errorf("no port: %v", err)
	}
	// A malformed Host never matches, but listed origins still do.
	if err := listed.Check("https://app.example.com", "https://bad host"); err != nil {
		t.Errorf("listed origin with a malformed Host: %v", err)
	}
	if err := zero.Check("https://bad host", "https://bad host"); err == nil {
		t.Error("malformed origin equal to a malformed Host allowed")
	}
}
