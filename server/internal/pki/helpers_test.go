package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
)

// newClock returns a clock at the current time, so certificates also work
// with TLS stacks that use the system clock, truncated so comparisons are
// exact after DER encoding.
func newClock() *fakeclock.Clock {
	return fakeclock.New(time.Now().UTC().Truncate(time.Second))
}

func newLogger(t *testing.T) (hclog.Logger, *testlog.Writer) {
	t.Helper()
	buf := testlog.New(t)
	return hclog.New(&hclog.LoggerOptions{Name: "pki", Level: hclog.Debug, Output: buf}), buf
}

// testConfig returns a Config with the clock and a test logger.
func testConfig(t *testing.T, clk *fakeclock.Clock, hostnames ...string) Config {
	t.Helper()
	log, _ := newLogger(t)
	return Config{Hostnames: hostnames, Now: clk.Now, Logger: log}
}

func mustLoad(t *testing.T, dir string, cfg Config) *Authority {
	t.Helper()
	a, err := LoadOrCreate(dir, cfg)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	return a
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	writeFile(t, to, readFile(t, from))
}

// snapshot returns the content of every PKI file in dir ("" when absent).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	for _, f := range []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, TokenKeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err == nil {
			m[f] = string(b)
		}
	}
	return m
}

func mustParseCSR(t *testing.T, p []byte) *x509.CertificateRequest {
	t.Helper()
	csr, err := ParseCSR(p)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	return csr
}
