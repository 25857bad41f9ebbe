package main

import (
	"bytes"
	"context"
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
