package dataplane

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// name253 is a 253-byte DNS name: three 63-byte labels and a 61-byte one.
var name253 = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)

func TestValidateDomainRoute(t *testing.T) {
	valid := []struct{ in, want string }{
		{"contoso.local", "contoso.local"},
		{"CONTOSO.Local", "contoso.local"},
		{"*.contoso.local", "*.contoso.local"},
		{"*.Corp.EXAMPLE", "*.corp.example"},
		{"a", "a"},
		{"*.a", "*.a"},
		{"_ldap._tcp.dc.local", "_ldap._tcp.dc.local"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"BÜCHER.example", "bÜcher.example"}, // only ASCII is lower-cased
		{strings.Repeat("x", 63) + ".example", strings.Repeat("x", 63) + ".example"},
		{name253, name253},
		{"*." + name253[2:], "*." + name253[2:]}, // 253 bytes counting "*."
	}
	for _, tc := range valid {
		got, err := ValidateDomainRoute(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ValidateDomainRoute(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if len(name253) != 253 || len("*."+name253[2:]) != 253 {
		t.Fatal("boundary names have the wrong length")
	}
}

// invalidDomainRoutes maps each rejected route to a word of its reason.
var invalidDomainRoutes = []struct{ in, reason string }{
	{"", "empty"},
	{"*.", "wildcard"},
	{"*", `"*"`},
	{"**.a", `"*"`},
	{"*a.b", `"*"`},
	{"a*.b", `"*"`},
	{"a.*.b", `"*"`},
	{"*.*.b", `"*"`},
	{"a.*", `"*"`},
	{"a.b*", `"*"`},
	{".", "empty label"},
	{"..", "empty label"},
	{".a", "empty label"},
	{"a..b", "empty label"},
	{"a.", "empty label"},
	{"contoso.local.", "empty label"},
	{"*..a", "empty label"},
	{"*.a.", "empty label"},
	{"*.a..b", "empty label"},
	{strings.Repeat("x", 64) + ".example", "63"},
	{"*." + strings.Repeat("x", 64), "63"},
	{name253 + "e", "253"},
	{"*." + name253[1:], "253"}, // 254 bytes counting "*."
	{"a.\xff.b", "UTF-8"},
}

func TestValidateDomainRouteRejects(t *testing.T) {
	for _, tc := range invalidDomainRoutes {
		got, err := ValidateDomainRoute(tc.in)
		var inv *InvalidFieldError
		if !errors.As(err, &inv) || inv.Field != "domain" || !errors.Is(err, ErrInvalidField) {
			t.Errorf("ValidateDomainRoute(%q) = %q, %v; want *InvalidFieldError", tc.in, got, err)
			continue
		}
		if !strings.Contains(inv.Reason, tc.reason) {
			t.Errorf("ValidateDomainRoute(%q): reason %q, want it to mention %s", tc.in, inv.Reason, tc.reason)
		}
		if got != "" {
			t.Errorf("ValidateDomainRoute(%q) returned %q with an error", tc.in, got)
		}
	}
}

// TestDomainRoutesOnTheWire checks that the decoder and the encoder apply
// the same rules as ValidateDomainRoute.
func TestDomainRoutesOnTheWire(t *testing.T) {
	for _, tc := range invalidDomainRoutes {
		_, err := DecodeControl(rawRouteAdvertise(nil, []string{"ok.example", tc.in}, 0))
		var inv *InvalidFieldError
		if !errors.As(err, &inv) || inv.Field != "RouteAdvertise.domains[1].name" {
			t.Errorf("decode %q: err = %v", tc.in, err)
		}
		out, err := (&RouteAdvertise{Domains: []DomainRoute{{Name: "ok.example"}, {Name: tc.in}}}).AppendFrame([]byte("x"))
		if !errors.As(err, &inv) || inv.Field != "RouteAdvertise.domains[1].name" {
			t.Errorf("encode %q: err = %v", tc.in, err)
		}
		if string(out) != "x" {
			t.Errorf("encode %q: dst changed", tc.in)
		}
	}

	// Decoding lower-cases; encoding writes lower-case.
	m, err := DecodeControl(rawRouteAdvertise(nil, []string{"DB.Contoso.LOCAL", "*.X.example"}, 1))
	if err != nil {
		t.Fatal(err)
	}
	ra := m.(*RouteAdvertise)
	if ra.Domains[0].Name != "db.contoso.local" || ra.Domains[1].Name != "*.x.example" {
		t.Fatalf("decoded %+v", ra.Domains)
	}
	frame, err := (&RouteAdvertise{Version: 1, Domains: []DomainRoute{{Name: "DB.Contoso.LOCAL"}}}).AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(frame, []byte("db.contoso.local")) || bytes.Contains(frame, []byte("DB")) {
		t.Fatalf("encoded % X", frame)
	}

	// The boundaries are accepted on the wire too.
	for _, name := range []string{name253, "*." + name253[2:]} {
		ra := &RouteAdvertise{Version: 1, Domains: []DomainRoute{{Name: name}}}
		frame, err := ra.AppendFrame(nil)
		if err != nil {
			t.Fatalf("encode %d bytes: %v", len(name), err)
		}
		m, err := DecodeControl(frame[FrameHeaderLen:])
		if err != nil || m.(*RouteAdvertise).Domains[0].Name != name {
			t.Fatalf("decode %d bytes: %v", len(name), err)
		}
	}
}
