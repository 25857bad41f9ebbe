package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The messages a new user meets when a flag is wrong say what is wrong and
// what to do, not what failed deep inside.
func TestConfusingMessagesAreClear(t *testing.T) {
	gw := startGateway(t)
	other := startGateway(t)
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(tokFile, []byte("a.b.c\n"), 0o600)
	os.WriteFile(secretFile, []byte("0123456789abcdef0123\n"), 0o600)
	adminKey := filepath.Join(gw.dataDir, "admin.key")
	ca := filepath.Join(gw.dataDir, "ca.pem")
	// A port nothing listens on: one just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  []string
		never []string
	}{
		{"malformed --ca-pin on connect", []string{"connect", "--gateway", gw.url, "--token-file", tokFile, "--ca-pin", "xyz", "--stdio"}, "",
			[]string{"malformed", "64 hex digits"}, []string{"required"}},
		{"blank --ca-pin on connect", []string{"connect", "--gateway", gw.url, "--token-file", tokFile, "--ca-pin", " ", "--stdio"}, "",
			[]string{"malformed"}, []string{"required"}},
		{"--ca-pin with colons", []string{"agent", "enroll", "--secret-file", secretFile, "--gateway", gw.url, "--ca-pin", "AB:CD:EF", "--config-dir", filepath.Join(dir, "a1")}, "",
			[]string{"malformed", "without colons"}, []string{"required", "needs"}},
		{"a PEM as --api-key-file", []string{"agents", "--gateway", gw.url, "--api-key-file", ca, "--ca-file", ca}, "",
			[]string{"holds a PEM block", "admin.key"}, []string{"non-printable", "Internal"}},
		{"forgotten --ca-file", []string{"agents", "--gateway", gw.url, "--api-key-file", adminKey}, "",
			[]string{"does not trust", "--ca-file", "ca.pem"}, []string{"Unavailable"}},
		{"another gateway's --ca-file", []string{"sessions", "--gateway", gw.url, "--api-key-file", adminKey, "--ca-file", filepath.Join(other.dataDir, "ca.pem")}, "",
			[]string{"did not sign", "ca.pem of this gateway"}, []string{"Unavailable"}},
		{"no gateway there", []string{"gateway", "token", "create", "--gateway", closed, "--api-key-file", adminKey, "--ca-file", ca}, "",
			[]string{"cannot reach the gateway", "is it running"}, []string{"Unavailable"}},
		{"empty token on stdin", []string{"agent", "enroll", "--token", "-", "--config-dir", filepath.Join(dir, "a2")}, "\n",
			[]string{"--token - read an empty line", "< token.jwt"}, []string{"parts"}},
		{"blank token", []string{"agent", "enroll", "--token", " ", "--config-dir", filepath.Join(dir, "a3")}, "",
			[]string{"the token is empty"}, []string{"parts"}},
		{"cut token", []string{"agent", "enroll", "--token", "eyJhbGciOi.eyJqdGkiOi", "--config-dir", filepath.Join(dir, "a4")}, "",
			[]string{"three base64url parts", "this has 2"}, []string{"got 2 parts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			err := run(t.Context(), tc.args, strings.NewReader(tc.stdin), &out, &errOut)
			if err == nil {
				t.Fatalf("outpost %s succeeded", strings.Join(tc.args, " "))
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			for _, n := range tc.never {
				if strings.Contains(msg, n) {
					t.Errorf("%q has %q", msg, n)
				}
			}
		})
	}
}
