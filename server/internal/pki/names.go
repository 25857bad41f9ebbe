package pki

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// hostNames is a normalized set of server certificate names.
type hostNames struct {
	cn  string       // common name: the first configured name
	dns []string     // lowercase, sorted, unique
	ips []netip.Addr // unmapped, sorted, unique
}

// parseHostNames validates and normalizes configured names and adds the
// names every server certificate carries so local tools and health checks
// can connect: localhost, 127.0.0.1 and ::1.
func parseHostNames(configured []string) (hostNames, error) {
	var n hostNames
	for i, h := range append(slices.Clone(configured), "localhost", "127.0.0.1", "::1") {
		s := strings.TrimSpace(h)
		if ip, ok := parseIPLiteral(s); ok {
			n.ips = append(n.ips, ip)
			if i == 0 {
				n.cn = ip.String()
			}
			continue
		}
		name := strings.TrimSuffix(strings.ToLower(s), ".")
		if !validDNSName(name, true) {
			return hostNames{}, fmt.Errorf("pki: host name %q is neither a valid DNS name nor an IP address", h)
		}
		n.dns = append(n.dns, name)
		if i == 0 {
			n.cn = name
		}
	}
	slices.Sort(n.dns)
	n.dns = slices.Compact(n.dns)
	slices.SortFunc(n.ips, netip.Addr.Compare)
	n.ips = slices.Compact(n.ips)
	return n, nil
}

// parseIPLiteral accepts an IP address, IPv6 optionally in brackets. Zones
// are refused: they mean nothing in a certificate.
func parseIPLiteral(s string) (netip.Addr, bool) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// certNames returns the names a certificate carries, normalized like
// parseHostNames.
func certNames(c *x509.Certificate) hostNames {
	n := hostNames{cn: c.Subject.CommonName}
	for _, d := range c.DNSNames {
		n.dns = append(n.dns, strings.ToLower(d))
	}
	for _, ip := range c.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			n.ips = append(n.ips, a.Unmap())
		}
	}
	slices.Sort(n.dns)
	n.dns = slices.Compact(n.dns)
	slices.SortFunc(n.ips, netip.Addr.Compare)
	n.ips = slices.Compact(n.ips)
	return n
}

func (n hostNames) equal(o hostNames) bool {
	return n.cn == o.cn && slices.Equal(n.dns, o.dns) && slices.Equal(n.ips, o.ips)
}

func (n hostNames) netIPs() []net.IP {
	out := make([]net.IP, 0, len(n.ips))
	for _, ip := range n.ips {
		out = append(out, net.IP(ip.AsSlice()))
	}
	return out
}

// validDNSName reports whether name (already lowercased, without a trailing
// dot) is a syntactically valid host name: labels of 1–63 letters, digits,
// '-' or '_' not starting or ending with '-', 253 bytes at most. With
// wildcard, a leading "*." label is allowed.
func validDNSName(name string, wildcard bool) bool {
	if wildcard {
		name = strings.TrimPrefix(name, "*.")
	}
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ValidHostName reports whether name is a syntactically valid host name
// (no wildcard, no trailing dot; letters are compared case-insensitively).
func ValidHostName(name string) bool {
	return validDNSName(strings.ToLower(name), false)
}
