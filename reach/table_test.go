package reach

import (
	"net/netip"
	"testing"
)

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

		{"Azure platform", []string{"0.0.0.0/0"}, "168.63.129.16:80", false, "target 168.63.129.16:80 is the cloud metadata address and not explicitly advertised"},
		{"Azure platform via /16", []string{"168.63.0.0/16"}, "168.63.129.16:80", false, "target 168.63.129.16:80 is the cloud metadata address and not explicitly advertised"},
		{"Azure platform via domain", nil, "168.63.129.16:80", true, "target 168.63.129.16:80 is the cloud metadata address and not explicitly advertised"},
		{"Azure platform explicit", []string{"168.63.129.16/32"}, "168.63.129.16:80", false, ""},
		{"Azure platform neighbour", []string{"168.63.0.0/16"}, "168.63.129.17:80", false, ""},
		{"Alibaba metadata", []string{"0.0.0.0/0"}, "100.100.100.200:80", false, "target 100.100.100.200:80 is the cloud metadata address and not explicitly advertised"},
		{"Alibaba metadata via CGNAT /10", []string{"100.64.0.0/10"}, "100.100.100.200:80", false, "target 100.100.100.200:80 is the cloud metadata address and not explicitly advertised"},
		{"Alibaba metadata via domain", nil, "100.100.100.200:80", true, "target 100.100.100.200:80 is the cloud metadata address and not explicitly advertised"},
		{"Alibaba metadata explicit", []string{"100.100.100.200/32"}, "100.100.100.200:80", false, ""},
		{"Oracle metadata", []string{"0.0.0.0/0"}, "192.0.0.192:80", false, "target 192.0.0.192:80 is the cloud metadata address and not explicitly advertised"},
		{"Oracle metadata via /24", []string{"192.0.0.0/24"}, "192.0.0.192:80", false, "target 192.0.0.192:80 is the cloud metadata address and not explicitly advertised"},
		{"Oracle metadata mapped", []string{"0.0.0.0/0"}, "[::ffff:192.0.0.192]:80", true, "target 192.0.0.192:80 is the cloud metadata address and not explicitly advertised"},
		{"Oracle metadata explicit", []string{"192.0.0.192/32"}, "192.0.0.192:80", false, ""},
		{"zero address", []string{"0.0.0.0/0"}, "", true, "target invalid AddrPort is not in advertised subnets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table := Compile(Routes{Subnets: prefixes(t, tc.subnets...)})
			var ap netip.AddrPort
			if tc.addr != "" {
				ap = netip.MustParseAddrPort(tc.addr)
			}
			ref := table.Check(ap, tc.domain)
			var got verdict
			if ref != nil {
				got = verdict(ref.Error())
			}
			if got != tc.want {
				t.Fatalf("Check(%s) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}

// TestOwnAddrs checks the addresses of this host: each is a special range of
// its own, opened only by its /32, unless it already lies in a special range.
func TestOwnAddrs(t *testing.T) {
	own := []netip.Addr{
		netip.MustParseAddr("10.0.0.5"),
		netip.MustParseAddr("::ffff:10.0.0.6"), // checked as 10.0.0.6
		netip.MustParseAddr("2001:db8::5"),
		netip.MustParseAddr("fd00::2%eth0"), // the zone is dropped
		netip.MustParseAddr("127.0.0.1"),    // stays loopback
		netip.MustParseAddr("fe80::1"),      // stays link-local
		netip.MustParseAddr("10.0.0.5"),     // listed twice
		{},                                  // ignored
	}
	tests := []struct {
		name    string
		subnets []string
		addr    string
		domain  bool
		want    string // "" allowed, else the refusal reason
	}{
		{"own via /8", []string{"10.0.0.0/8"}, "10.0.0.5:22", false, "target 10.0.0.5:22 is an address of this host and not explicitly advertised"},
		{"own via 0/0", []string{"0.0.0.0/0"}, "10.0.0.5:22", false, "target 10.0.0.5:22 is an address of this host and not explicitly advertised"},
		{"own via /31", []string{"10.0.0.4/31"}, "10.0.0.5:22", false, "target 10.0.0.5:22 is an address of this host and not explicitly advertised"},
		{"own via domain", nil, "10.0.0.5:22", true, "target 10.0.0.5:22 is an address of this host and not explicitly advertised"},
		{"own explicit", []string{"10.0.0.5/32"}, "10.0.0.5:22", false, ""},
		{"own explicit via domain", []string{"10.0.0.5/32"}, "10.0.0.5:22", true, ""},
		{"own mapped", []string{"10.0.0.0/8"}, "10.0.0.6:22", false, "target 10.0.0.6:22 is an address of this host and not explicitly advertised"},
		{"own target mapped", []string{"10.0.0.0/8"}, "[::ffff:10.0.0.5]:22", false, "target 10.0.0.5:22 is an address of this host and not explicitly advertised"},
		{"neighbour", []string{"10.0.0.0/8"}, "10.0.0.7:22", false, ""},
		{"own IPv6 via domain", nil, "[2001:db8::5]:22", true, "target [2001:db8::5]:22 is an address of this host and not explicitly advertised"},
		{"own IPv6 zoned", nil, "[fd00::2%eth1]:22", true, "target [fd00::2]:22 is an address of this host and not explicitly advertised"},
		{"other IPv6 via domain", nil, "[2001:db8::6]:22", true, ""},
		{"own loopback via /8", []string{"127.0.0.0/8"}, "127.0.0.1:22", false, ""},
		{"own loopback via 0/0", []string{"0.0.0.0/0"}, "127.0.0.1:22", false, "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"own link-local", nil, "[fe80::1]:22", true, "target [fe80::1]:22 is link-local and not explicitly advertised"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table := Compile(Routes{Subnets: prefixes(t, tc.subnets...)}).WithOwnAddrs(own)
			var got string
			if ref := table.Check(netip.MustParseAddrPort(tc.addr), tc.domain); ref != nil {
				got = ref.Error()
			}
			if got != tc.want {
				t.Fatalf("Check(%s) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}

	base := Compile(Routes{Subnets: prefixes(t, "10.0.0.0/8")})
	with := base.WithOwnAddrs(own)
	if len(with.own) != 4 {
		t.Errorf("own ranges %v, want 10.0.0.5, 10.0.0.6, 2001:db8::5, fd00::2", with.own)
	}
	if base.Check(netip.MustParseAddrPort("10.0.0.5:22"), false) != nil {
		t.Error("WithOwnAddrs modified its receiver")
	}
	if with.WithOwnAddrs(nil).Check(netip.MustParseAddrPort("10.0.0.5:22"), false) != nil {
		t.Error("WithOwnAddrs(nil) kept the previous addresses")
	}
}

// TestInterfaceAddrs checks the shape of the host's addresses and that a
// table told them refuses every one not explicitly advertised. It checks
// the policy only: nothing is dialed.
func TestInterfaceAddrs(t *testing.T) {
	addrs, err := InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	table := Compile(Routes{Subnets: prefixes(t, "0.0.0.0/0")}).WithOwnAddrs(addrs)
	for _, a := range addrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Errorf("InterfaceAddrs returned %v", a)
		}
		if ref := table.Check(netip.AddrPortFrom(a, 22), true); ref == nil || ref.Range == "" {
			t.Errorf("%v: own address allowed by 0.0.0.0/0 and a domain (%v)", a, ref)
		}
	}
}
