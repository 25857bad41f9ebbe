package dataplane

import "unicode/utf8"

// Domain route length limits, in bytes.
const (
	// MaxDomainRouteLen is the longest domain route, counting a leading
	// "*." wildcard: a wildcard stands for at least one label, so one
	// longer than 253 bytes could never match a valid host name.
	MaxDomainRouteLen = 253
	// MaxDomainLabelLen is the longest label of a domain route.
	MaxDomainLabelLen = 63
)

// ValidateDomainRoute checks that s is a domain route as RouteAdvertise
// carries it and returns its canonical form, with ASCII letters lower-cased
// (other bytes are kept, so an IDN may be sent in UTF-8 or as punycode).
//
// A domain route is a DNS name ("contoso.local") or an explicit wildcard
// ("*.contoso.local", which matches subdomains only). Rejected, with an
// *InvalidFieldError for field "domain": the empty string; "*." alone; a
// "*" anywhere but as the leading "*." label; empty labels, including a
// leading or trailing dot ("a.", ".a", "a..b") — a trailing dot is not
// accepted as a root marker; a label over MaxDomainLabelLen bytes; a route
// over MaxDomainRouteLen bytes counting the "*."; invalid UTF-8. No other
// character set is imposed (underscores, for example, are fine).
//
// Encoders apply the same rules and write the lower-cased form, so
// upper-case input is accepted and canonicalized rather than rejected;
// decoders reject the same inputs and lower-case what they return.
func ValidateDomainRoute(s string) (string, error) {
	if reason := domainRouteProblem(s); reason != "" {
		return "", &InvalidFieldError{Field: "domain", Reason: reason}
	}
	if !utf8.ValidString(s) {
		return "", &InvalidFieldError{Field: "domain", Reason: "invalid UTF-8"}
	}
	return lowerASCII(s), nil
}

// domainRouteProblem returns why s is not a domain route, or "" if it is
// one. It does not check UTF-8.
func domainRouteProblem[T string | []byte](s T) string {
	if len(s) == 0 {
		return "empty domain route"
	}
	if len(s) > MaxDomainRouteLen {
		return "domain route longer than 253 bytes"
	}
	i := 0
	if len(s) >= 2 && s[0] == '*' && s[1] == '.' {
		if len(s) == 2 {
			return `wildcard "*." without a domain`
		}
		i = 2
	}
	start := i
	for ; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if s[i] == '*' {
				return `"*" is allowed only as a leading "*." label`
			}
			continue
		}
		switch n := i - start; {
		case n == 0:
			return "empty label"
		case n > MaxDomainLabelLen:
			return "label longer than 63 bytes"
		}
		start = i + 1
	}
	return ""
}
