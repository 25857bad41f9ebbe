package transport

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// SPKI pins (DESIGN.md §4, §5, §9). A pin is the SHA-256 of a certificate's
// DER SubjectPublicKeyInfo, written as 64 hex digits. Outpost writes pins in
// lowercase and accepts either case when it reads one. Two kinds are checked
// here, and only here:
//
//   - a key pin (VerifyLeafPin) names the key of the peer's own certificate:
//     the agent pins the gateway's server key this way;
//   - a CA pin (VerifyCAPin, CAPinnedTLS) names the key of the CA the peer's
//     certificate chains to: enrollment tokens and "outpost connect" pin the
//     gateway CA this way. The pinned key must belong to a certificate the
//     peer presented after its leaf — never to the leaf itself — and the
//     leaf must verify against that certificate.
//
// Every comparison of a key with a pin takes constant time.

// PinHexLen is the length of a pin's text form: 64 hex digits.
const PinHexLen = 2 * sha256.Size

// ErrMalformedPin is wrapped by ParsePin's errors: the text is not 64 hex
// digits.
var ErrMalformedPin = errors.New("malformed SPKI pin")

// Pin is a parsed SPKI pin: the SHA-256 of a DER SubjectPublicKeyInfo. The
// zero Pin is not a usable pin (no key is known to hash to it); get one from
// ParsePin. A Pin is a value, safe to copy and to use concurrently.
type Pin [sha256.Size]byte

// ParsePin parses the text form of a pin: exactly 64 hex digits, upper or
// lower case, nothing else (no spaces, no "sha256:" prefix). Its error wraps
// ErrMalformedPin and says what is wrong without echoing the text (a token
// pasted by mistake should not end up in a log).
func ParsePin(s string) (Pin, error) {
	var p Pin
	if len(s) != PinHexLen {
		if strings.Contains(s, ":") {
			return p, fmt.Errorf("%w: want %d hex digits (a SHA-256) without colons or a prefix such as sha256:, got %d characters", ErrMalformedPin, PinHexLen, len(s))
		}
		return p, fmt.Errorf("%w: want %d hex digits (a SHA-256), got %d characters", ErrMalformedPin, PinHexLen, len(s))
	}
	if _, err := hex.Decode(p[:], []byte(s)); err != nil {
		return Pin{}, fmt.Errorf("%w: want %d hex digits (a SHA-256), found a character that is not one", ErrMalformedPin, PinHexLen)
	}
	return p, nil
}

// String returns the pin as 64 lowercase hex digits.
func (p Pin) String() string { return hex.EncodeToString(p[:]) }

// Matches reports, in constant time, whether cert's key is the pinned one.
func (p Pin) Matches(cert *x509.Certificate) bool {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return subtle.ConstantTimeCompare(sum[:], p[:]) == 1
}

// SPKIHashHex returns the pin of a DER SubjectPublicKeyInfo: its SHA-256 as
// 64 lowercase hex digits, the form Outpost stores and sends.
func SPKIHashHex(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// SPKISHA256 returns the pin of cert's key (SPKIHashHex of its
// RawSubjectPublicKeyInfo).
func SPKISHA256(cert *x509.Certificate) string {
	return SPKIHashHex(cert.RawSubjectPublicKeyInfo)
}

// PinError is a failed pin check during a TLS handshake, as returned by the
// functions VerifyLeafPin and VerifyCAPin return. Reason says what did not
// match; Err, if set, is the chain verification error behind it.
type PinError struct {
	Reason string
	Err    error
}

func (e *PinError) Error() string {
	if e.Err != nil {
		return "SPKI pin check failed: " + e.Reason + ": " + e.Err.Error()
	}
	return "SPKI pin check failed: " + e.Reason
}

// Unwrap returns Err.
func (e *PinError) Unwrap() error { return e.Err }

// VerifyLeafPin returns a tls.Config.VerifyConnection function that accepts
// the peer only if the key of its leaf certificate is pin. It checks nothing
// else: the configuration's usual verification (RootCAs, ServerName) still
// runs before it. Errors are *PinError.
func VerifyLeafPin(pin Pin) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &PinError{Reason: "the peer presented no certificate"}
		}
		if leaf := cs.PeerCertificates[0]; !pin.Matches(leaf) {
			return &PinError{Reason: fmt.Sprintf("the peer's key %s is not the pinned %s", SPKISHA256(leaf), pin)}
		}
		return nil
	}
}

// VerifyCAPin returns a tls.Config.VerifyConnection function for a
// configuration with InsecureSkipVerify set, which replaces the usual
// verification with a CA pin: the peer is accepted only if one of the
// certificates it presented after its leaf has the pinned key, and the leaf
// verifies for host (name, validity, server-auth usage) against that
// certificate as the only root, the other presented certificates serving as
// intermediates. A leaf whose own key is the pinned one is refused. Errors
// are *PinError.
func VerifyCAPin(host string, pin Pin) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &PinError{Reason: "the peer presented no certificate"}
		}
		leaf := cs.PeerCertificates[0]
		roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
		found := false
		for _, c := range cs.PeerCertificates[1:] {
			if pin.Matches(c) {
				roots.AddCert(c)
				found = true
			} else {
				intermediates.AddCert(c)
			}
		}
		switch {
		case !found && pin.Matches(leaf):
			return &PinError{Reason: fmt.Sprintf("only the peer's own certificate has the pinned key %s; a CA pin must name the key of the CA", pin)}
		case !found:
			return &PinError{Reason: fmt.Sprintf("no CA certificate in the peer's chain has the pinned key %s", pin)}
		}
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: intermediates})
		if err != nil {
			return &PinError{Reason: fmt.Sprintf("the certificate does not verify against the pinned CA %s", pin), Err: err}
		}
		return nil
	}
}

// CAPinnedTLS returns a new client configuration for host (the server name
// sent and verified) that trusts exactly the CA whose key is pin, as
// VerifyCAPin checks it, instead of the system roots; TLS 1.2 or later. The
// caller owns the result and may set more fields before first use.
func CAPinnedTLS(host string, pin Pin) *tls.Config {
	return &tls.Config{
		ServerName: host,
		MinVersion: tls.VersionTLS12,
		// The chain is verified by VerifyConnection against the pinned CA
		// instead of the system roots.
		InsecureSkipVerify: true,
		VerifyConnection:   VerifyCAPin(host, pin),
	}
}
