// Package detect finds the host's DNS domain for an agent that has no route
// configured (DESIGN.md §7), so that the agent can advertise it with
// auto_detected = true.
//
// # Sources, in order
//
//  1. The resolver configuration (/etc/resolv.conf on Linux and macOS). As in
//     resolv.conf(5), the "domain" and "search" keywords are mutually
//     exclusive and the last instance of either wins: a last "domain X" gives
//     X, a last "search A B C" gives A, the first search domain. Comment lines
//     start with '#' or ';'. A missing or unreadable file is no candidate.
//  2. The domain part of the host name (os.Hostname): "web01.corp.example.com"
//     gives "corp.example.com". A host name without a dot gives nothing. No
//     DNS query is made.
//
// The first candidate that passes Plausible wins; an implausible candidate
// falls through to the next source rather than trying the other search
// domains, which are usually the first one's parents or unrelated suffixes.
//
// # Plausibility
//
// Plausible rejects names that would route nothing useful or route far too
// much: names ValidateDomainRoute rejects, wildcards, IP addresses,
// single-label names ("local", "lan", "home", "internal", "localdomain",
// "corp", …), names whose top-level label is all digits, and names under the
// special-use or infrastructure top-level labels "localhost", "localdomain",
// "invalid", "example" and "arpa" (so "in-addr.arpa", "ip6.arpa" and
// "home.arpa" too), as well as example.com, example.net and example.org.
// Multi-label private names stay plausible: "contoso.local",
// "corp.internal", "ec2.internal", "lab.test" (".test" is kept on purpose:
// labs use it).
package detect

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/outposthq/outpost/dataplane"
)

// DefaultResolvConf is the resolver configuration read when
// Options.ResolvConf is empty.
const DefaultResolvConf = "/etc/resolv.conf"

// maxResolvConf bounds how much of the resolver configuration is read; real
// files are a few hundred bytes.
const maxResolvConf = 64 << 10

// ErrNotFound is returned (wrapped, with every rejected candidate in the
// message) by Domain when no source gives a plausible domain.
var ErrNotFound = errors.New("detect: no plausible DNS domain")

// specialTLDs are the top-level labels under which no name is plausible:
// special-use names (RFC 6761, RFC 2606), the de-facto "localdomain" of many
// distributions, and "arpa" (reverse zones and home.arpa, RFC 8375). The map
// is never modified.
var specialTLDs = map[string]bool{
	"localhost":   true,
	"localdomain": true,
	"invalid":     true,
	"example":     true,
	"arpa":        true,
}

// specialNames are two-label names reserved for documentation (RFC 2606).
var specialNames = map[string]bool{
	"example.com": true,
	"example.net": true,
	"example.org": true,
}

// Options tell Domain where to look. The zero value reads DefaultResolvConf
// and os.Hostname.
type Options struct {
	// ResolvConf is the path of the resolver configuration. If empty,
	// DefaultResolvConf.
	ResolvConf string
	// Hostname returns the host name. If nil, os.Hostname.
	Hostname func() (string, error)
}

// Result is a detected domain.
type Result struct {
	// Domain is the canonical domain: lower-case, no trailing dot.
	Domain string
	// Source says where it came from: "resolv.conf domain",
	// "resolv.conf search" or "hostname".
	Source string
}

// Domain returns the host's DNS domain from the first source (see the
// package comment) that gives a plausible one. It returns an error wrapping
// ErrNotFound, naming what each source gave and why it was rejected, when
// there is none. It reads the resolver configuration once per call and is
// safe for concurrent use.
func Domain(o Options) (Result, error) {
	path := o.ResolvConf
	if path == "" {
		path = DefaultResolvConf
	}
	hostname := o.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	var why []string

	name, keyword, err := readResolvConf(path)
	switch {
	case err != nil:
		why = append(why, err.Error())
	case keyword == "":
		why = append(why, path+": no domain or search line")
	case name == "":
		why = append(why, fmt.Sprintf("%s: the last %s line names no domain", path, keyword))
	default:
		d, err := Plausible(name)
		if err == nil {
			return Result{Domain: d, Source: "resolv.conf " + keyword}, nil
		}
		why = append(why, fmt.Sprintf("%s %s: %v", path, keyword, err))
	}

	host, err := hostname()
	switch {
	case err != nil:
		why = append(why, "hostname: "+err.Error())
	default:
		part := hostDomain(host)
		if part == "" {
			why = append(why, fmt.Sprintf("hostname %q has no domain part", host))
			break
		}
		d, err := Plausible(part)
		if err == nil {
			return Result{Domain: d, Source: "hostname"}, nil
		}
		why = append(why, fmt.Sprintf("hostname %q: %v", host, err))
	}
	return Result{}, fmt.Errorf("%w (%s)", ErrNotFound, strings.Join(why, "; "))
}

// readResolvConf returns the candidate of the file at path.
func readResolvConf(path string) (name, keyword string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	name, keyword, err = ResolvConfDomain(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	return name, keyword, nil
}

// ResolvConfDomain returns the domain candidate of a resolver configuration
// and the keyword it came from ("domain" or "search"): the argument of the
// last "domain" line, or the first argument of the last "search" line,
// whichever comes last (resolv.conf(5)). A trailing dot is removed; the
// name is not otherwise checked (see Plausible). It returns "" when there is
// neither line, and only read errors.
func ResolvConfDomain(r io.Reader) (name, keyword string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fields := strings.Fields(line)
		switch fields[0] {
		case "domain", "search":
			keyword, name = fields[0], ""
			if len(fields) > 1 {
				name = fields[1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	return strings.TrimSuffix(name, "."), keyword, nil
}

// hostDomain returns what follows the first label of a host name, without a
// trailing dot; "" when the name has a single label.
func hostDomain(host string) string {
	host = strings.TrimSuffix(strings.TrimSpace(host), ".")
	_, rest, ok := strings.Cut(host, ".")
	if !ok {
		return ""
	}
	return rest
}

// ImplausibleError is Plausible's refusal of a name.
type ImplausibleError struct {
	Name   string // as given
	Reason string // e.g. "a single label"
}

// Error returns `"lan" is not a plausible domain: a single label`.
func (e *ImplausibleError) Error() string {
	return fmt.Sprintf("%q is not a plausible domain: %s", e.Name, e.Reason)
}

// Plausible returns the canonical form (lower-case, no trailing dot) of a
// domain worth advertising, or an *ImplausibleError saying why it is not (see
// the package comment for the rules).
func Plausible(name string) (string, error) {
	refuse := func(reason string) (string, error) {
		return "", &ImplausibleError{Name: name, Reason: reason}
	}
	trimmed := strings.TrimSuffix(name, ".")
	if strings.Contains(trimmed, "*") {
		return refuse("a wildcard")
	}
	if _, err := netip.ParseAddr(trimmed); err == nil {
		return refuse("an IP address")
	}
	d, err := dataplane.ValidateDomainRoute(trimmed)
	if err != nil {
		var inv *dataplane.InvalidFieldError
		if errors.As(err, &inv) {
			return refuse(inv.Reason)
		}
		return refuse(err.Error())
	}
	i := strings.LastIndexByte(d, '.')
	if i < 0 {
		return refuse("a single label")
	}
	tld := d[i+1:]
	switch {
	case allDigits(tld):
		return refuse("its top-level label is numeric")
	case specialTLDs[tld]:
		return refuse("." + tld + " is a special-use name")
	case specialNames[d]:
		return refuse("reserved for documentation")
	}
	return d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
