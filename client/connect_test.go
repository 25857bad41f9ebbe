package client

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testtls"
)

// A client's later connections resume the TLS session of an earlier one.
func TestTLSSessionResumption(t *testing.T) {
	ca, cert := testtls.Chain(t, "gateway")
	addr := testtls.Serve(t, cert)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	pin := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	for name, o := range map[string]Config{"ca file": {CAPEM: caPEM}, "ca pin": {CAPin: hex.EncodeToString(pin[:])}} {
		conf, err := pinnedTLS(o, &url.URL{Host: addr})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{false, true, true} {
			c, err := tls.Dial("tcp", addr, conf)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if got := c.ConnectionState().DidResume; got != want {
				t.Errorf("%s, connection %d: resumed %v, want %v", name, i, got, want)
			}
			c.Close()
		}
	}
}

// Without a CA the client refuses to start, and says whether the pin is
// missing or malformed.
func TestPinRequired(t *testing.T) {
	const valid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		pin, want string
	}{
		{"", "is required"},
		{"  ", "malformed"}, // given, but blank: malformed, not missing
		{valid[:63], "malformed"},
		{valid + "00", "malformed"},
		{"x" + valid[1:], "malformed"},
		{strings.ToUpper(valid), ""},
		{" " + valid + "\n", ""},
	} {
		_, err := pinnedTLS(Config{CAPin: tc.pin}, &url.URL{Host: "127.0.0.1:1"})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("pin %q: %v", tc.pin, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("pin %q: %v, want an error containing %q", tc.pin, err, tc.want)
		case tc.want == "malformed" && !errors.Is(err, transport.ErrMalformedPin):
			t.Errorf("pin %q: %v, want transport.ErrMalformedPin", tc.pin, err)
		}
	}
}
