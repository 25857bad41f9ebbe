package session

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/outposthq/outpost/dataplane"
)

func TestMatchDomain(t *testing.T) {
	table := compileRoutes(Routes{Domains: []string{"contoso.local", "*.Fabrikam.Test", "bad..route", "*"}})
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
	}
	for _, tc := range tests {
		if got := table.matchDomain(tc.host); got != tc.want {
			t.Errorf("matchDomain(%q) = %v, want %v", tc.host, got, tc.want)
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
	table := compileRoutes(Routes{Subnets: prefixes(t, "::/0", "10.1.2.3/16")})
	if len(table.subnets) != 1 || table.subnets[0] != netip.MustParsePrefix("10.1.0.0/16") {
		t.Fatalf("compiled subnets %v, want [10.1.0.0/16]", table.subnets)
	}
}

func TestCheck(t *testing.T) {
	type verdict string // "" allowed, else the refusal reason
	tests := []struct {
		name    string
		subnets []string
		addr    string
		domain  bool
		want    verdict
	}{
		{"in subnet", []string{"10.0.0.0/24"}, "10.0.0.9:22", false, ""},
		{"host bits ignored", []string{"10.0.0.77/24"}, "10.0.0.9:22", false, ""},
		{"outside subnets", []string{"10.0.0.0/24"}, "10.0.1.9:22", false, "target 10.0.1.9:22 is not in advertised subnets"},
		{"no routes", nil, "10.0.0.9:22", false, "target 10.0.0.9:22 is not in advertised subnets"},
		{"everything", []string{"0.0.0.0/0"}, "203.0.113.7:443", false, ""},
		{"domain allows any", nil, "203.0.113.7:443", true, ""},
		{"mapped is IPv4", []string{"10.0.0.0/24"}, "[::ffff:10.0.0.9]:22", false, ""},
		{"mapped outside", nil, "[::ffff:10.0.0.9]:22", false, "target 10.0.0.9:22 is not in advertised subnets"},

		{"loopback", []string{"10.0.0.0/8"}, "127.0.0.1:22", false, "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"loopback via 0/0", []string{"0.0.0.0/0"}, "127.0.0.1:22", false, "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"loopback via 96/3", []string{"96.0.0.0/3"}, "127.0.0.1:22", false, "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"loopback via domain", nil, "127.0.0.1:22", true, "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"loopback /8", []string{"127.0.0.0/8"}, "127.1.2.3:22", false, ""},
		{"loopback /32", []string{"127.0.0.1/32"}, "127.0.0.1:22", false, ""},
		{"loopback other /32", []string{"127.0.0.1/32"}, "127.0.0.2:22", false, "target 127.0.0.2:22 is loopback and not explicitly advertised"},
		{"loopback explicit via domain", []string{"127.0.0.0/8"}, "127.0.0.1:22", true, ""},
		{"mapped loopback", []string{"0.0.0.0/0"}, "[::ffff:127.0.0.1]:22", false, "target 127.0.0.1:22 is loopback and not explicitly advertised"},

		{"link-local", []string{"169.0.0.0/8"}, "169.254.1.1:22", false, "target 169.254.1.1:22 is link-local and not explicitly advertised"},
		{"link-local explicit", []string{"169.254.0.0/16"}, "169.254.1.1:22", false, ""},
		{"metadata", []string{"0.0.0.0/0"}, "169.254.169.254:80", false, "target 169.254.169.254:80 is the cloud metadata address and not explicitly advertised"},
		{"metadata via link-local /16", []string{"169.254.0.0/16"}, "169.254.169.254:80", false, "target 169.254.169.254:80 is the cloud metadata address and not explicitly advertised"},
		{"metadata via domain", nil, "169.254.169.254:80", true, "target 169.254.169.254:80 is the cloud metadata address and not explicitly advertised"},
		{"metadata explicit", []string{"169.254.169.254/32"}, "169.254.169.254:80", false, ""},
		{"unspecified", []string{"0.0.0.0/0"}, "0.0.0.0:22", false, "target 0.0.0.0:22 is unspecified and not explicitly advertised"},
		{"this network", []string{"0.0.0.0/1"}, "0.1.2.3:22", false, "target 0.1.2.3:22 is unspecified and not explicitly advertised"},
		{"multicast", []string{"0.0.0.0/0"}, "224.0.0.1:22", false, "target 224.0.0.1:22 is multicast and not explicitly advertised"},
		{"multicast explicit", []string{"239.1.0.0/16"}, "239.1.2.3:22", false, ""},

		{"IPv6 without domain", []string{"0.0.0.0/0"}, "[2001:db8::1]:22", false, "target [2001:db8::1]:22 is not in advertised subnets"},
		{"IPv6 via domain", nil, "[2001:db8::1]:22", true, ""},
		{"IPv6 loopback", []string{"0.0.0.0/0", "127.0.0.0/8"}, "[::1]:22", true, "target [::1]:22 is loopback and not explicitly advertised"},
		{"IPv6 link-local", nil, "[fe80::1]:22", true, "target [fe80::1]:22 is link-local and not explicitly advertised"},
		{"IPv6 link-local zoned", nil, "[fe80::1%eth0]:22", true, "target [fe80::1]:22 is link-local and not explicitly advertised"},
		{"IPv6 unspecified", nil, "[::]:22", true, "target [::]:22 is unspecified and not explicitly advertised"},
		{"IPv6 multicast", nil, "[ff02::1]:22", true, "target [ff02::1]:22 is multicast and not explicitly advertised"},
		{"IPv6 metadata", nil, "[fd00:ec2::254]:80", true, "target [fd00:ec2::254]:80 is the cloud metadata address and not explicitly advertised"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table := compileRoutes(Routes{Subnets: prefixes(t, tc.subnets...)})
			ref := table.check(netip.MustParseAddrPort(tc.addr), tc.domain)
			var got verdict
			if ref != nil {
				got = verdict(ref.Error())
			}
			if got != tc.want {
				t.Fatalf("check(%s) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}

// TestGuardControl checks the Control hook on its own: it is what stops a
// name that resolves (or rebinds) to a forbidden address.
func TestGuardControl(t *testing.T) {
	g := &guard{table: compileRoutes(Routes{Subnets: prefixes(t, "10.0.0.0/8")})}
	if err := g.control(t.Context(), "tcp4", "10.1.2.3:22", nil); err != nil {
		t.Fatalf("allowed address refused: %v", err)
	}
	if g.allRefused() != nil {
		t.Fatal("allRefused after an allowed address")
	}
	for _, addr := range []string{"127.0.0.1:22", "192.0.2.1:22", "[::1]:22", "[2001:db8::1]:22", "nonsense"} {
		if err := g.control(t.Context(), "tcp", addr, nil); err == nil {
			t.Errorf("control(%s) allowed", addr)
		}
	}

	g = &guard{table: compileRoutes(Routes{})}
	for _, addr := range []string{"192.0.2.1:22", "198.51.100.1:22"} {
		_ = g.control(t.Context(), "tcp4", addr, nil)
	}
	if got, want := nameRefusal("db.other.test", g.allRefused()), "db.other.test resolves only to addresses outside advertised subnets"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	_ = g.control(t.Context(), "tcp4", "127.0.0.1:22", nil)
	if got, want := nameRefusal("db.other.test", g.allRefused()), "db.other.test resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	if !strings.Contains(g.refused[0].Error(), "192.0.2.1:22") {
		t.Errorf("refusal %q does not name the address", g.refused[0])
	}
}

// TestGuardReason checks the reason chosen for a failed dial from what the
// Control hook saw and the error the dialer returned.
func TestGuardReason(t *testing.T) {
	name := dataplane.Target{Name: "db.other.test", Port: 22}
	ip := dataplane.Target{Addr: netip.MustParseAddr("10.0.0.9"), Port: 22}
	refusedOp := func(g *guard, addr string) error {
		err := g.control(t.Context(), "tcp4", addr, nil)
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)), Err: err}
	}
	connRefused := func(addr string) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)),
			Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}

	t.Run("every address refused", func(t *testing.T) {
		g := &guard{table: compileRoutes(Routes{})}
		err := refusedOp(g, "10.0.0.9:22")
		if got, want := g.reason(ip, err), "target 10.0.0.9:22 is not in advertised subnets"; got != want {
			t.Errorf("IP target: %q, want %q", got, want)
		}
		if got, want := g.reason(name, err), "db.other.test resolves only to addresses outside advertised subnets"; got != want {
			t.Errorf("name target: %q, want %q", got, want)
		}
	})
	t.Run("refusal first, allowed address failed", func(t *testing.T) {
		g := &guard{table: compileRoutes(Routes{Subnets: prefixes(t, "10.1.0.0/16")})}
		err := refusedOp(g, "10.0.0.9:22")
		_ = g.control(t.Context(), "tcp4", "10.1.0.1:22", nil)
		_ = g.control(t.Context(), "tcp4", "10.1.0.2:22", nil)
		if got, want := g.reason(name, err), "dial db.other.test:22: could not reach 10.1.0.1, 10.1.0.2; its other addresses are refused by the routes"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("allowed address failed first", func(t *testing.T) {
		g := &guard{table: compileRoutes(Routes{Subnets: prefixes(t, "10.1.0.0/16")})}
		_ = g.control(t.Context(), "tcp4", "10.1.0.1:22", nil)
		_ = refusedOp(g, "10.0.0.9:22")
		if got, want := g.reason(name, connRefused("10.1.0.1:22")), "dial 10.1.0.1:22: connection refused"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("resolution failed", func(t *testing.T) {
		g := &guard{table: compileRoutes(Routes{})}
		err := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "db.other.test", IsNotFound: true}}
		if got, want := g.reason(name, err), "cannot resolve db.other.test: no such host"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		g := &guard{table: compileRoutes(Routes{Subnets: prefixes(t, "10.0.0.0/8")})}
		_ = g.control(t.Context(), "tcp4", "10.0.0.9:22", nil)
		err := &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.9:22")), Err: os.ErrDeadlineExceeded}
		if got, want := g.reason(ip, err), "dial 10.0.0.9:22: i/o timeout"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
}
