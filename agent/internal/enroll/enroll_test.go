package enroll

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

const testPin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// A failed enrollment leaves no empty directories behind: those it created
// for the identity are removed, those that were there stay.
func TestFailedEnrollmentLeavesNoDirectories(t *testing.T) {
	// Nothing listens on port 1: the call fails after the directory was
	// prepared.
	tok := token(t, map[string]any{"gw_url": "https://127.0.0.1:1", "exp": time.Now().Add(time.Hour).Unix(), "ca_spki_sha256": testPin})
	enroll := func(dir string) {
		t.Helper()
		_, err := Enroll(context.Background(), Options{Token: tok, ConfigDir: dir, Timeout: 10 * time.Second})
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("enroll: %v, want ErrUnreachable", err)
		}
	}

	root := t.TempDir()
	enroll(filepath.Join(root, "new", "agent"))
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left behind in %s: %v", root, entries)
	}

	existing := t.TempDir()
	enroll(existing)
	if _, err := os.Stat(existing); err != nil {
		t.Errorf("the existing config directory went: %v", err)
	}
	if _, err := os.Stat(filepath.Join(existing, "certs")); !os.IsNotExist(err) {
		t.Errorf("empty certs/ left behind: %v", err)
	}

	// A previous identity's certs/ stays, with its files.
	kept := filepath.Join(existing, CertFile)
	os.MkdirAll(filepath.Dir(kept), 0o700)
	os.WriteFile(kept, []byte("previous"), 0o644)
	enroll(existing)
	if b, err := os.ReadFile(kept); err != nil || string(b) != "previous" {
		t.Errorf("previous certificate: %q %v", b, err)
	}
}

// The static secret comes with the gateway's URL and CA pin; a token names
// its own, and the two credentials do not mix.
func TestSecretOptions(t *testing.T) {
	tok := token(t, map[string]any{"gw_url": "https://gw.example:7171", "exp": time.Now().Add(time.Hour).Unix(), "ca_spki_sha256": testPin})
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"both", Options{Token: tok, Secret: "s", GatewayURL: "https://gw.example:7171", CAPin: testPin}, "a token or a static secret, not both"},
		{"secret without pin", Options{Secret: "s", GatewayURL: "https://gw.example:7171"}, "no CA pin given"},
		{"secret with a bad pin", Options{Secret: "s", GatewayURL: "https://gw.example:7171", CAPin: "abc"}, "CA pin: "},
		{"secret without URL", Options{Secret: "s", CAPin: testPin}, `gateway URL "" is not an https URL`},
		{"secret with http", Options{Secret: "s", GatewayURL: "http://gw.example:7171", CAPin: testPin}, `gateway URL "http://gw.example:7171" is not an https URL`},
		{"token with URL", Options{Token: tok, GatewayURL: "https://other:7171"}, "go with a static secret"},
		{"token with pin", Options{Token: tok, CAPin: testPin}, "go with a static secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "agent")
			tc.o.ConfigDir = dir
			_, err := Enroll(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("config directory created for refused options: %v", err)
			}
		})
	}
	// A good secret goes where its options say: here, nowhere.
	_, err := Enroll(context.Background(), Options{Secret: "s", GatewayURL: "https://127.0.0.1:1", CAPin: testPin, ConfigDir: t.TempDir(), Name: "n"})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "https://127.0.0.1:1") {
		t.Fatalf("secret to a closed port: %v", err)
	}
}
