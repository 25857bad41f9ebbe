package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Host name limits (RFC 1035), in bytes, not counting a trailing dot.
const (
	maxHostNameLen  = 253
	maxHostLabelLen = 63
	// maxTargetLen is the longest valid target: a host name with its
	// trailing dot, a colon and a five-digit port.
	maxTargetLen = maxHostNameLen + 1 + 1 + 5
)

// Target is a parsed ConnectRequest target: either an IP address or a host
// name, and a port. The zero value is not a valid target.
type Target struct {
	// Addr is the address of an IP-literal target, IPv4-mapped IPv6
	// addresses unmapped to IPv4; the zero netip.Addr for a host name.
	Addr netip.Addr
	// Name is the host name of a name target, ASCII lower-cased and without
	// a trailing dot; "" for an IP target.
	Name string
	// Port is the TCP port, 1 to 65535.
	Port uint16
}

// IsName reports whether t is a host-name target.
func (t Target) IsName() bool { return t.Name != "" }

// String returns t as host:port, with an IPv6 address in brackets.
func (t Target) String() string {
	if t.IsName() {
		return net.JoinHostPort(t.Name, strconv.Itoa(int(t.Port)))
	}
	return netip.AddrPortFrom(t.Addr, t.Port).String()
}

// TargetError is a target that ParseTarget rejects. Its message is the
// reason the session handler sends back in a ConnectResponse Error.
type TargetError struct {
	// Target is the target as received; "" when it was empty or too long
	// to quote, and then Error leaves it out.
	Target string
	// Reason says what is wrong, e.g. "missing port".
	Reason string
}

// Error returns `invalid target "x": missing port`.
func (e *TargetError) Error() string {
	if e.Target == "" {
		return "invalid target: " + e.Reason
	}
	return fmt.Sprintf("invalid target %q: %s", e.Target, e.Reason)
}

// ParseTarget parses a ConnectRequest target: "host:port" where host is an
// IPv4 address, a bracketed IPv6 address without zone ("[2001:db8::1]:22"),
// or a host name (letters, digits, '-', '_', dot-separated labels of 1 to 63
// bytes, 253 bytes at most, an optional trailing dot; a last label that is
// all digits or 0x-hex is refused, as resolvers may read such a name as a
// numeric address), and port is a decimal number from 1 to 65535. It only
// parses: whether the target may be reached is the Handler's decision.
//
// It returns a *TargetError on failure.
func ParseTarget(s string) (Target, error) {
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, &TargetError{Target: s, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case s == "":
		return bad("empty")
	case len(s) > maxTargetLen:
		return Target{}, &TargetError{Reason: fmt.Sprintf("too long (%d bytes, limit %d)", len(s), maxTargetLen)}
	}

	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("missing closing bracket")
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" || rest == ":" {
			return bad("missing port")
		}
		if rest[0] != ':' {
			return bad("unexpected %q after closing bracket", rest)
		}
		port, reason := parsePort(rest[1:])
		if reason != "" {
			return bad("%s", reason)
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return bad("bracketed host %q is not an IPv6 address", host)
		}
		if a.Zone() != "" {
			return bad("IPv6 zone not allowed")
		}
		return Target{Addr: a.Unmap(), Port: port}, nil
	}

	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("missing port")
	}
	host, portText := s[:i], s[i+1:]
	if strings.IndexByte(host, ':') >= 0 {
		return bad("IPv6 address must be in brackets")
	}
	if host == "" {
		return bad("missing host")
	}
	if portText == "" {
		return bad("missing port")
	}
	port, reason := parsePort(portText)
	if reason != "" {
		return bad("%s", reason)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return Target{Addr: a, Port: port}, nil // no colon: IPv4
	}
	name := strings.TrimSuffix(host, ".")
	if !validHostName(name) {
		return bad("invalid host name %q", host)
	}
	return Target{Name: strings.ToLower(name), Port: port}, nil
}

// parsePort parses a decimal port from 1 to 65535 and returns a reason when
// it is not one.
func parsePort(s string) (uint16, string) {
	if s == "" {
		return 0, "missing port"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Sprintf("invalid port %q", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Sprintf("port %s out of range 1-65535", s)
	}
	return uint16(n), ""
}

// validHostName reports whether h (without a trailing dot) is a host name
// ParseTarget accepts.
func validHostName(h string) bool {
	if h == "" || len(h) > maxHostNameLen {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxHostLabelLen {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return !numericLabel(labels[len(labels)-1])
}

// numericLabel reports whether l reads as a number (decimal, or 0x-hex), as
// inet_aton would read it.
func numericLabel(l string) bool {
	digits := "0123456789"
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		l, digits = l[2:], "0123456789abcdefABCDEF"
	}
	for i := 0; i < len(l); i++ {
		if strings.IndexByte(digits, l[i]) < 0 {
			return false
		}
	}
	return true
}
