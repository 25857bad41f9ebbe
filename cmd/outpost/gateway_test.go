package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --enrollment-secret-file goes through the gateway config's length check
// (the same as enrollment_secret in the JSON config); nothing is created.
func TestGatewaySecretFileTooShort(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("fifteen-bytes..\n"), 0o600)
	data := filepath.Join(dir, "gw")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"gateway", "--data-dir", data, "--enrollment-secret-file", secret,
		"--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0"}, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "enrollment_secret (or --enrollment-secret-file) is 15 bytes") {
		t.Fatalf("gateway with a 15-byte secret: %v", err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("data dir created by a refused config: %v", err)
	}
}

// The enrollment settings given as flags reach the config's checks.
func TestGatewayEnrollmentFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--provisioner-audience", "urn:outpost:gw"}, "provisioner_audience is set but provisioner_public_key is not"},
		{[]string{"--enrollment-token-leeway", "6m"}, "enrollment_token_leeway 6m0s: want 0 (none) to 5m0s"},
		{[]string{"--enrollment-token-leeway", "-1s"}, "enrollment_token_leeway -1s"},
	} {
		args := append([]string{"gateway", "--data-dir", filepath.Join(dir, "gw"), "--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0"}, tc.args...)
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("outpost %s: %v, want an error containing %q", strings.Join(args, " "), err, tc.want)
		}
	}
}

// "gateway token create --help" says that the gateway accepts a token for
// its leeway after it expires.
func TestTokenCreateHelpNamesLeeway(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"gateway", "token", "create", "-h"}, strings.NewReader(""), &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"enrollment_token_leeway", "--enrollment-token-leeway; default 1m0s, 0 to 5m0s", "--ttl 1s token still enrolls"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, errOut.String())
		}
	}
}
