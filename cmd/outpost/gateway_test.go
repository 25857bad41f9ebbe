package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testlog"
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
	if err != nil {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"enrollment_token_leeway", "--enrollment-token-leeway; default 1m0s, 0 to 5m0s", "--ttl 1s token still enrolls"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

// The first start tells where the admin key is, never the key: neither on
// stdout nor in the logs. A later start says nothing about it.
func TestGatewayPrintsAdminKeyPathOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw data") // a space: the printed command quotes it
	keyFile := filepath.Join(dir, "admin.key")
	for i, wantLine := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		out, errOut := testlog.New(t), testlog.New(t)
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"gateway", "--data-dir", dir, "--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0", "--log-level", "trace"},
				strings.NewReader(""), out, errOut)
		}()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(errOut.String(), "gateway serving") {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("start %d: gateway not serving within 20 s:\n%s", i+1, errOut.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		key, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if k := strings.TrimSpace(string(key)); strings.Contains(out.String(), k) || strings.Contains(errOut.String(), k) {
			t.Errorf("start %d printed the admin key:\n%s\n%s", i+1, out.String(), errOut.String())
		}
		want := "First admin API key written to '" + keyFile + "' (0600). Use it with --api-key-file '" + keyFile + "'"
		if got := strings.Contains(out.String(), want); got != wantLine {
			t.Errorf("start %d: stdout %q, want the line %q: %v", i+1, out.String(), want, wantLine)
		}
	}
}

// --store, or $OUTPOST_STORE without it, reaches the config's check, which
// never repeats the value (it may hold a password); the flag wins over
// the environment. apikey takes --store in place of --data-dir.
func TestGatewayStoreFlag(t *testing.T) {
	dir := t.TempDir()
	const bad = "mysql://outpost:hunter2@db/outpost"
	gateway := func(args ...string) error {
		args = append([]string{"gateway", "--data-dir", filepath.Join(dir, "gw"), "--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0"}, args...)
		var out, errOut bytes.Buffer
		return run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	}
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "store: want a postgres:// or postgresql:// URL") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v, want the store error without the password", what, err)
		}
	}
	check("--store", gateway("--store", bad))
	t.Setenv("OUTPOST_STORE", bad)
	check("$OUTPOST_STORE", gateway())
	if err := gateway("--store", "", "--listen", "bad"); err == nil || strings.Contains(err.Error(), "store:") {
		t.Errorf("--store \"\" does not override $OUTPOST_STORE: %v", err)
	}
	var out, errOut bytes.Buffer
	check("apikey with $OUTPOST_STORE", run(context.Background(), []string{"gateway", "apikey", "list"}, strings.NewReader(""), &out, &errOut))
	t.Setenv("OUTPOST_STORE", "")
	err := run(context.Background(), []string{"gateway", "apikey", "list"}, strings.NewReader(""), &out, &errOut)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--data-dir (or --store) is required") {
		t.Errorf("apikey without a store: %v", err)
	}
}

// "gateway seal-key create" writes a 0600 key once and names its id; a
// second run on the same file refuses to replace it.
func TestSealKeyCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seal.key")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"gateway", "seal-key", "create", "--out", path}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("seal-key create: %v\n%s", err, errOut.String())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	if !strings.Contains(out.String(), "--seal-key-file") {
		t.Errorf("output does not say how to use the key: %q", out.String())
	}
	before, _ := os.ReadFile(path)
	err := run(context.Background(), []string{"gateway", "seal-key", "create", "--out", path}, strings.NewReader(""), &out, &errOut)
	if after, _ := os.ReadFile(path); err == nil || !bytes.Equal(before, after) {
		t.Fatalf("a second seal-key create on the same file: %v (file changed: %v)", err, !bytes.Equal(before, after))
	}
	if err := run(context.Background(), []string{"gateway", "seal-key", "create"}, strings.NewReader(""), &out, &errOut); !errors.Is(err, errUsage) {
		t.Errorf("seal-key create without --out: %v, want a usage error", err)
	}
}
