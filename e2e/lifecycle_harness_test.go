package e2e

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/internal/testtls"
)

// lifecycleAgent is fastAgent with the host kept out of the test: domain
// detection reads resolvConf (a path in a temp dir, missing unless the test
// writes it) and a host name without a domain; agent.json is watched every
// 20 ms.
func lifecycleAgent(t *testing.T, dir string) (opts agent.RunnerConfig, resolvConf string) {
	t.Helper()
	opts = fastAgent(dir)
	resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	opts.ResolvConfPath = resolvConf
	opts.Hostname = func() (string, error) { return "vm", nil }
	opts.WatchInterval = 20 * time.Millisecond
	return opts, resolvConf
}

// lcClock is a clock running offset ahead of the wall clock.
type lcClock struct{ offset atomic.Int64 }

func (c *lcClock) Now() time.Time           { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *lcClock) Set(offset time.Duration) { c.offset.Store(int64(offset)) }

// lcReadCert parses the PEM certificate at path.
func lcReadCert(t *testing.T, path string) *x509.Certificate { return testtls.ReadCert(t, path) }

// lcEditTunnel rewrites the Tunnel section of dir/agent.json with edit, the way
// an operator's tool would (write a temp file, rename it over), keeping every
// other key.
func lcEditTunnel(t *testing.T, dir string, edit func(tun map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "agent.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	tun, ok := doc["Tunnel"].(map[string]any)
	if !ok {
		t.Fatalf("agent.json has no Tunnel section: %s", b)
	}
	edit(tun)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".edit"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// until polls cond every 20 ms until it holds, failing the test after within.
func lcUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lcEcho opens a session through the agent to target (an echo server) and
// checks one round trip.
func lcEcho(t *testing.T, gw *gateway, agentID, target, msg string) {
	t.Helper()
	s, err := gw.dial(agentID, target)
	if err != nil {
		t.Fatalf("session through %s: %v", agentID, err)
	}
	defer s.Close()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
}

// lcStopAsync stops ra in the background; the returned channel closes when
// Run has returned.
func lcStopAsync(ra *runningAgent) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ra.stop()
	}()
	return done
}
