package transport

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/testtls"
)

// pinOf returns cert's pin, parsed.
func pinOf(t *testing.T, cert *x509.Certificate) Pin {
	t.Helper()
	p, err := ParsePin(SPKISHA256(cert))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSPKIHash(t *testing.T) {
	cert, _ := testtls.SelfSigned(t, "pin")
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	want := hex.EncodeToString(sum[:])
	if got := SPKIHashHex(cert.Leaf.RawSubjectPublicKeyInfo); got != want {
		t.Errorf("SPKIHashHex = %s, want %s", got, want)
	}
	if got := SPKISHA256(cert.Leaf); got != want || len(got) != PinHexLen || got != strings.ToLower(got) {
		t.Errorf("SPKISHA256 = %s, want %s (64 lowercase hex digits)", got, want)
	}
	if got := pinOf(t, cert.Leaf).String(); got != want {
		t.Errorf("Pin.String = %s, want %s", got, want)
	}
}

// Either case of hex digits is accepted and parses to the same pin; anything
// but 64 hex digits is malformed, and the error says so.
func TestParsePin(t *testing.T) {
	const lower = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	want, err := ParsePin(lower)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{strings.ToUpper(lower), "0123456789ABCDEF0123456789abcdef0123456789AbCdEf0123456789abcdef"} {
		if got, err := ParsePin(s); err != nil || got != want {
			t.Errorf("ParsePin(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for name, s := range map[string]string{
		"empty":         "",
		"63 digits":     lower[:63],
		"65 digits":     lower + "0",
		"not hex":       "g" + lower[1:],
		"space":         " " + lower[1:],
		"trailing nl":   lower[1:] + "\n",
		"prefix":        "sha256:" + lower[7:],
		"base64 length": strings.Repeat("A", 44),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePin(s)
			if !errors.Is(err, ErrMalformedPin) {
				t.Fatalf("ParsePin(%q) = %v, want ErrMalformedPin", s, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "malformed") || strings.Contains(msg, "missing") || strings.Contains(msg, "required") {
				t.Errorf("error %q: want one that says the pin is malformed", msg)
			}
		})
	}
}

func TestVerifyCAPin(t *testing.T) {
	ca, server := testtls.Chain(t, "gateway")
	leaf := server.Leaf
	otherCA, otherServer := testtls.Chain(t, "impostor")
	upper, err := ParsePin(strings.ToUpper(SPKISHA256(ca)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		host  string
		pin   Pin
		chain []*x509.Certificate
		want  string // "" = accepted, else in the error
	}{
		{"pin matches the CA", "127.0.0.1", pinOf(t, ca), []*x509.Certificate{leaf, ca}, ""},
		{"uppercase pin", "127.0.0.1", upper, []*x509.Certificate{leaf, ca}, ""},
		{"IPv6 name", "::1", pinOf(t, ca), []*x509.Certificate{leaf, ca}, ""},
		{"pin matches only the leaf", "127.0.0.1", pinOf(t, leaf), []*x509.Certificate{leaf, ca}, "only the peer's own certificate"},
		{"leaf alone, leaf pin", "127.0.0.1", pinOf(t, leaf), []*x509.Certificate{leaf}, "only the peer's own certificate"},
		{"CA not sent", "127.0.0.1", pinOf(t, ca), []*x509.Certificate{leaf}, "no CA certificate"},
		{"another CA", "127.0.0.1", pinOf(t, otherCA), []*x509.Certificate{leaf, ca}, "no CA certificate"},
		{"pinned CA appended to a foreign leaf", "127.0.0.1", pinOf(t, ca), []*x509.Certificate{otherServer.Leaf, otherCA, ca}, "does not verify"},
		{"wrong host name", "gateway.example", pinOf(t, ca), []*x509.Certificate{leaf, ca}, "does not verify"},
		{"no certificate", "127.0.0.1", pinOf(t, ca), nil, "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyCAPin(tc.host, tc.pin)(tls.ConnectionState{PeerCertificates: tc.chain})
			checkPinErr(t, err, tc.want)
		})
	}
}

func TestVerifyLeafPin(t *testing.T) {
	ca, server := testtls.Chain(t, "gateway")
	chain := []*x509.Certificate{server.Leaf, ca}
	for _, tc := range []struct {
		name  string
		pin   Pin
		chain []*x509.Certificate
		want  string
	}{
		{"leaf key", pinOf(t, server.Leaf), chain, ""},
		{"CA key", pinOf(t, ca), chain, "is not the pinned"},
		{"no certificate", pinOf(t, server.Leaf), nil, "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkPinErr(t, VerifyLeafPin(tc.pin)(tls.ConnectionState{PeerCertificates: tc.chain}), tc.want)
		})
	}
}

// checkPinErr checks err against want: "" means accepted, anything else a
// *PinError whose message holds want.
func checkPinErr(t *testing.T, err error, want string) {
	t.Helper()
	var pe *PinError
	switch {
	case want == "" && err != nil:
		t.Errorf("refused: %v", err)
	case want == "":
	case !errors.As(err, &pe):
		t.Errorf("err = %v, want a *PinError containing %q", err, want)
	case !strings.Contains(err.Error(), want):
		t.Errorf("err = %v, want one containing %q", err, want)
	}
}

// CAPinnedTLS completes a real handshake with a server whose CA is pinned,
// and fails it, with a *PinError the client can find, when the pin names the
// server's own key.
func TestCAPinnedTLSHandshake(t *testing.T) {
	checkGoroutines(t)
	ca, server := testtls.Chain(t, "gateway")
	addr := testtls.Serve(t, server)

	dial := func(pin Pin) error {
		c, err := tls.Dial("tcp", addr, CAPinnedTLS("127.0.0.1", pin))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := dial(pinOf(t, ca)); err != nil {
		t.Errorf("CA pin: %v", err)
	}
	err := dial(pinOf(t, server.Leaf))
	var pe *PinError
	if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "only the peer's own certificate") {
		t.Errorf("leaf key as CA pin: %v, want a *PinError", err)
	}
}
