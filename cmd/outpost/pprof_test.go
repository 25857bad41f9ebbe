package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testlog"
)

// Every long-running command takes --pprof-listen.
func TestPprofFlag(t *testing.T) {
	for _, args := range [][]string{{"gateway"}, {"agent", "run"}, {"agent", "up"}, {"connect"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, "-h"), strings.NewReader(""), &out, &errOut)
		if err != nil || !strings.Contains(out.String(), "-pprof-listen") {
			t.Errorf("outpost %s -h: %v, no -pprof-listen in:\n%s", strings.Join(args, " "), err, out.String())
		}
	}
}

// The gateway serves profiles on the --pprof-listen address only, never on
// its API port, and stops serving them when it stops.
func TestGatewayPprofListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errOut := testlog.New(t)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"gateway", "--data-dir", dir, "--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0",
			"--pprof-listen", "127.0.0.1:0"}, strings.NewReader(""), testlog.New(t), errOut)
	}()
	pprofURL := regexp.MustCompile(`serving pprof: url=(\S+)`)
	api := regexp.MustCompile(`gateway serving: api=(\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for !api.MatchString(errOut.String()) || !pprofURL.MatchString(errOut.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("gateway not serving within 20 s:\n%s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	url := pprofURL.FindStringSubmatch(errOut.String())[1]
	resp, err := http.Get(url + "cmdline")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmdline := []byte(os.Args[0])
	if resp.StatusCode != 200 || !bytes.HasPrefix(body, cmdline) {
		t.Fatalf("GET %scmdline: %d %q", url, resp.StatusCode, body)
	}

	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	apiURL := "https://" + api.FindStringSubmatch(errOut.String())[1] + "/debug/pprof/cmdline"
	resp, err = c.Get(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 200 || bytes.Contains(body, cmdline) {
		t.Fatalf("the API port serves profiles: GET %s: %d %q", apiURL, resp.StatusCode, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("profiles still served after the gateway stopped")
	}
}
