// Package origin decides which web pages may open the gateway's client entry
// (DESIGN.md §9). A browser names the page behind every WebSocket handshake in
// the Origin header, and cannot be made to lie about it; a page from another
// site holding a session token must not be able to use it from a visitor's
// browser unless the operator allows that site. Clients that are not
// browsers ("outpost connect", backends) send no Origin and are not
// concerned.
//
// An origin is "scheme://host[:port]" (RFC 6454): http or https, a DNS name
// in ASCII (browsers send internationalized names in punycode) or an IP
// literal, and a port only when it is not the scheme's default. Names and
// schemes compare case-insensitively, so every origin is put in a canonical
// form — lowercase, default port dropped — before it is compared.
package origin

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Any is the allowed_origins entry that allows every origin.
const Any = "*"

// Policy says which origins may open the entry besides the gateway's own.
// The zero value (and a nil *Policy) allows the gateway's own origin only.
// A Policy is immutable and safe for concurrent use.
type Policy struct {
	allowed []string // canonical origins, sorted
	any     bool
}

// ErrNotAllowed is wrapped by Check's refusals.
var ErrNotAllowed = errors.New("origin not allowed")

// Parse builds a Policy from the configured list of origins. Each entry is
// an exact origin ("https://app.example.com", "http://127.0.0.1:8080"); Any
// ("*") allows every origin and is accepted only when allowAny confirms it.
// allowAny without Any in the list is an error too, so that neither setting
// has a silent meaning. The error names the first bad entry and why.
func Parse(list []string, allowAny bool) (*Policy, error) {
	p := &Policy{}
	for _, e := range list {
		if e == Any {
			if !allowAny {
				return nil, fmt.Errorf("%q lets any web page open sessions with a token it holds; set allow_any_origin to true to mean it", Any)
			}
			p.any = true
			continue
		}
		c, err := Canonical(e)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(p.allowed, c) {
			p.allowed = append(p.allowed, c)
		}
	}
	if allowAny && !p.any {
		return nil, fmt.Errorf("allow_any_origin is set but the list does not hold %q", Any)
	}
	slices.Sort(p.allowed)
	return p, nil
}

// Allowed returns the listed origins in canonical form, sorted, with Any
// first when it is allowed.
func (p *Policy) Allowed() []string {
	if p == nil {
		return nil
	}
	out := slices.Clone(p.allowed)
	if p.any {
		out = append([]string{Any}, out...)
	}
	return out
}

// Check decides on a WebSocket handshake whose Origin header is origin and
// which reached the gateway as self, the gateway's own origin as the client
// addressed it ("https://" + the request's Host). It returns nil when origin
// is empty (not a browser), is self, or is allowed by p; otherwise an error
// wrapping ErrNotAllowed that says why. A malformed origin or self is
// refused unless p allows any origin.
func (p *Policy) Check(origin, self string) error {
	if origin == "" || p != nil && p.any {
		return nil
	}
	c, err := Canonical(origin)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotAllowed, err)
	}
	if s, err := Canonical(self); err == nil && s == c {
		return nil
	}
	if p != nil {
		if _, ok := slices.BinarySearch(p.allowed, c); ok {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is neither this gateway (%s) nor in allowed_origins", ErrNotAllowed, c, self)
}

// Canonical checks that s is an origin and returns its canonical form:
// scheme and host lowercased, an IPv6 literal bracketed, the scheme's
// default port dropped. Errors say what is wrong with s.
func Canonical(s string) (string, error) {
	bad := func(why string) (string, error) { return "", fmt.Errorf("origin %q: %s", s, why) }
	switch {
	case s == "":
		return bad("empty")
	case strings.EqualFold(s, "null"):
		return bad(`"null" is the origin of sandboxed and local pages; it names no site and cannot be allowed`)
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '%' }):
		return bad("spaces, '%', control and non-ASCII characters are not allowed (write international names in punycode)")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("not a URL")
	}
	var defaultPort string
	switch u.Scheme {
	case "https":
		defaultPort = "443"
	case "http":
		defaultPort = "80"
	default:
		return bad("want scheme://host[:port] with scheme http or https")
	}
	switch {
	case u.Opaque != "" || u.Host == "":
		return bad("want scheme://host[:port]")
	case u.User != nil:
		return bad("an origin has no user information")
	case u.Path != "" || u.RawPath != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return bad("an origin has no path, query or fragment (not even a trailing '/')")
	}
	host, port := u.Hostname(), u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return bad("empty port")
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' {
			return bad("port must be 1 to 65535")
		}
		if port == defaultPort {
			port = ""
		}
	}
	bracketed := strings.HasPrefix(u.Host, "[")
	if a, err := netip.ParseAddr(host); err == nil {
		switch {
		case a.Zone() != "":
			return bad("an IPv6 zone is not part of an origin")
		case a.Is6() != bracketed, a.Is4In6():
			return bad("IPv6 literals go in brackets, IPv4 ones not")
		}
		host = a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
	} else if bracketed {
		return bad("brackets hold an IPv6 literal")
	} else if err := checkName(host); err != nil {
		return bad(err.Error())
	} else {
		host = strings.ToLower(host)
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}

// checkName accepts a DNS name: labels of 1 to 63 letters, digits, '-' and
// '_', at most 253 bytes in all.
func checkName(name string) error {
	if len(name) > 253 {
		return errors.New("host name over 253 bytes")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("host name with an empty or over-long label")
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("host name with character %q", r)
			}
		}
	}
	return nil
}
