package enroll

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// token returns an unsigned JWT-shaped token carrying claims (DecodeToken
// does not check signatures).
func token(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return "e30." + base64.RawURLEncoding.EncodeToString(b) + ".sig"
}

// The CA pin claim is checked with the transport's pin parser: missing and
// malformed are told apart, and upper-case hex is accepted.
func TestDecodeTokenPin(t *testing.T) {
	const pin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name, pin, want string // want: "" = accepted, else in the error
	}{
		{"lowercase", pin, ""},
		{"uppercase", strings.ToUpper(pin), ""},
		{"missing", "", "no ca_spki_sha256 claim"},
		{"short", pin[:62], "malformed SPKI pin"},
		{"not hex", "z" + pin[1:], "malformed SPKI pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeToken(token(t, map[string]any{
				"gw_url": "https://gw.example:7171", "exp": 1, "ca_spki_sha256": tc.pin,
			}))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
			case !errors.Is(err, ErrTokenMalformed) || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("err = %v, want ErrTokenMalformed containing %q", err, tc.want)
			}
		})
	}
}
