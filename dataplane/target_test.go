package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	valid := []struct {
		in   string
		want Target
		str  string
	}{
		{"10.0.0.9:22", Target{Addr: netip.MustParseAddr("10.0.0.9"), Port: 22}, "10.0.0.9:22"},
		{"127.0.0.1:65535", Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 65535}, "127.0.0.1:65535"},
		{"[2001:db8::1]:22", Target{Addr: netip.MustParseAddr("2001:db8::1"), Port: 22}, "[2001:db8::1]:22"},
		{"[::ffff:10.0.0.1]:22", Target{Addr: netip.MustParseAddr("10.0.0.1"), Port: 22}, "10.0.0.1:22"},
		{"DB01.Contoso.Local:5432", Target{Name: "db01.contoso.local", Port: 5432}, "db01.contoso.local:5432"},
		{"db.contoso.local.:1", Target{Name: "db.contoso.local", Port: 1}, "db.contoso.local:1"},
		{"localhost:0022", Target{Name: "localhost", Port: 22}, "localhost:22"},
		{"_srv-1.x:80", Target{Name: "_srv-1.x", Port: 80}, "_srv-1.x:80"},
		{"1password:80", Target{Name: "1password", Port: 80}, "1password:80"},
		{strings.Repeat("a", 63) + ".b:1", Target{Name: strings.Repeat("a", 63) + ".b", Port: 1}, strings.Repeat("a", 63) + ".b:1"},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.str {
				t.Fatalf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}

	long := strings.Repeat("a", 250) + ".bcdefgh:22" // 261 bytes
	invalid := []struct{ in, reason string }{
		{"", `invalid target: empty`},
		{"x", `invalid target "x": missing port`},
		{"x:", `invalid target "x:": missing port`},
		{":22", `invalid target ":22": missing host`},
		{"x:abc", `invalid target "x:abc": invalid port "abc"`},
		{"x:-1", `invalid target "x:-1": invalid port "-1"`},
		{"x:+22", `invalid target "x:+22": invalid port "+22"`},
		{"x:0", `invalid target "x:0": port 0 out of range 1-65535`},
		{"x:65536", `invalid target "x:65536": port 65536 out of range 1-65535`},
		{"x:99999999999999999999", `invalid target "x:99999999999999999999": port 99999999999999999999 out of range 1-65535`},
		{"2001:db8::1:22", `invalid target "2001:db8::1:22": IPv6 address must be in brackets`},
		{"[2001:db8::1]", `invalid target "[2001:db8::1]": missing port`},
		{"[2001:db8::1]:", `invalid target "[2001:db8::1]:": missing port`},
		{"[2001:db8::1]22", `invalid target "[2001:db8::1]22": unexpected "22" after closing bracket`},
		{"[2001:db8::1:22", `invalid target "[2001:db8::1:22": missing closing bracket`},
		{"[10.0.0.1]:22", `invalid target "[10.0.0.1]:22": bracketed host "10.0.0.1" is not an IPv6 address`},
		{"[db]:22", `invalid target "[db]:22": bracketed host "db" is not an IPv6 address`},
		{"[fe80::1%eth0]:22", `invalid target "[fe80::1%eth0]:22": IPv6 zone not allowed`},
		{"[::1]:0", `invalid target "[::1]:0": port 0 out of range 1-65535`},
		{"a..b:22", `invalid target "a..b:22": invalid host name "a..b"`},
		{".a:22", `invalid target ".a:22": invalid host name ".a"`},
		{"a b:22", `invalid target "a b:22": invalid host name "a b"`},
		{"a/b:22", `invalid target "a/b:22": invalid host name "a/b"`},
		{"héllo:22", `invalid target "héllo:22": invalid host name "héllo"`},
		{"127.1:22", `invalid target "127.1:22": invalid host name "127.1"`},
		{"2130706433:22", `invalid target "2130706433:22": invalid host name "2130706433"`},
		{"0x7f.0.0.1:22", `invalid target "0x7f.0.0.1:22": invalid host name "0x7f.0.0.1"`},
		{"127.0.0.0x1:22", `invalid target "127.0.0.0x1:22": invalid host name "127.0.0.0x1"`},
		{"010.0.0.1:22", `invalid target "010.0.0.1:22": invalid host name "010.0.0.1"`},
		{strings.Repeat("a", 64) + ".b:1", `invalid target "` + strings.Repeat("a", 64) + `.b:1": invalid host name "` + strings.Repeat("a", 64) + `.b"`},
		{"x\x00:22", `invalid target "x\x00:22": invalid host name "x\x00"`},
		{long, `invalid target: too long (261 bytes, limit 260)`},
	}
	for _, tc := range invalid {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if err == nil {
				t.Fatalf("got %+v, want error %q", got, tc.reason)
			}
			var te *TargetError
			if !errors.As(err, &te) {
				t.Fatalf("error %T, want *TargetError", err)
			}
			if err.Error() != tc.reason {
				t.Fatalf("error %q, want %q", err.Error(), tc.reason)
			}
		})
	}
}

func TestParseTargetLongestName(t *testing.T) {
	// 253-byte name with a trailing dot and a 5-digit port: exactly the limit.
	name := strings.Repeat(strings.Repeat("a", 62)+".", 4) + "b"
	if len(name) != maxHostNameLen {
		t.Fatalf("test name is %d bytes", len(name))
	}
	s := name + ".:65535"
	if len(s) != maxTargetLen {
		t.Fatalf("test target is %d bytes", len(s))
	}
	got, err := ParseTarget(s)
	if err != nil || got.Name != name || got.Port != 65535 {
		t.Fatalf("ParseTarget = %+v, %v", got, err)
	}
	if _, err := ParseTarget("a" + name + ":1"); err == nil {
		t.Fatal("254-byte name accepted")
	}
}
