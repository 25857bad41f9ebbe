package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
)

// gatewayProcess runs "outpost gateway" on dataDir and the given addresses
// as a child process (with extra flags) and waits until its API port
// accepts connections.
func gatewayProcess(t *testing.T, dataDir, listen, quicListen string, extra ...string) *exec.Cmd {
	t.Helper()
	args := []string{"gateway", "--data-dir", dataDir, "--listen", listen, "--quic-listen", quicListen, "--log-level", "debug"}
	args = append(args, extra...)
	if store, sealKey := testpg.GatewayStore(t, dataDir); store != "" {
		args = append(args, "--store", store, "--seal-key-file", sealKey)
	}
	cmd := exec.Command(outpostBinary(t), args...)
	cmd.Stdout, cmd.Stderr = testlog.New(t), testlog.New(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway process does not listen on %s: %v", listen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits up to within for cmd to exit and returns its error (an
// *exec.ExitError for a non-zero status). On timeout it kills cmd and fails
// the test.
func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s still running after %v", strings.Join(cmd.Args[1:3], " "), within)
		return nil
	}
}

// A gateway killed with SIGKILL (its agent connections never closed) and
// started again on the same data directory and port gets its agents back
// within seconds: it derives the same stateless reset key from its token
// key, so the agent's next packet on the stale connection draws a
// stateless reset and the agent reconnects at once, instead of waiting for
// the 120 s idle timeout.
func TestTunnelGatewayCrashRestart(t *testing.T) {
	dataDir := t.TempDir()
	gw := startGateway(t, dataDir, nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	listen, quicListen := gw.g.Addr().String(), gw.g.QUICAddr().String()
	gw.stop()

	proc := gatewayProcess(t, dataDir, listen, quicListen)
	// The agent notices the crash with its next control message: at the
	// latest a Heartbeat after IdleHeartbeat (2 s by default) without a
	// packet from the gateway.
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second) // through the child gateway

	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	proc.Wait()
	killed := time.Now()
	gw2 := startGateway(t, dataDir, func(c *server.Config) { c.Listen, c.QUICListen = listen, quicListen })
	gw2.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	t.Logf("the agent is online %v after the gateway's SIGKILL", time.Since(killed).Round(time.Millisecond))
	s, err := gw2.dial(id, tcpServer(t, hasher))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uploadAndHash(t, s, 1<<16)
}

// "outpost agent run" on a config directory it cannot use exits 1 at once,
// before dialing, with one ERROR saying what to fix.
func TestPermanentAgentRunStartErrors(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	for _, tc := range []struct {
		name   string
		breaks func(dir string) error
		want   []string
	}{
		{"corrupt agent.json", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "agent.json"), []byte(`{"Tunnel": {"Enabled": tru`), 0o600)
		}, []string{"agent.json", "fix ", "outpost agent enroll"}},
		{"agent key missing", func(dir string) error {
			return os.Remove(filepath.Join(dir, "certs", "agent.key"))
		}, []string{"agent.key", "no such file", "restore the file", "outpost agent enroll"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := enrollAgent(t, gw, strings.ReplaceAll(tc.name, " ", "-"), loopback, nil)
			if err := tc.breaks(dir); err != nil {
				t.Fatal(err)
			}
			cmd, stderr := agentProcess(t, dir)
			err := waitExit(t, cmd, 10*time.Second)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("agent run: %v, want exit status 1", err)
			}
			checkOneError(t, stderr.String(), tc.want...)
			if strings.Contains(stderr.String(), "tunnel down") || strings.Contains(stderr.String(), "tunnel up") {
				t.Error("the agent dialed before reporting the error")
			}
		})
	}
}

// "outpost agent run" of an agent deleted at the gateway exits 1 once the
// gateway refused it again, with one ERROR saying to enroll it again.
func TestPermanentDeletedAgentProcessExits(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	cmd, stderr := agentProcess(t, dir)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
	if code, body := gw.rest("DELETE", "/v1/agents/"+id, ""); code != 200 {
		t.Fatalf("DELETE /v1/agents/%s: %d %s", id, code, body)
	}
	deleted := time.Now()
	err := waitExit(t, cmd, 15*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("agent run: %v, want exit status 1", err)
	}
	t.Logf("the deleted agent's process exited %v after the delete", time.Since(deleted).Round(time.Millisecond))
	checkOneError(t, stderr.String(), "deleted at the gateway", "outpost agent enroll --config-dir "+dir)

	// Deleting it again: 404, in the API's words.
	code, body := gw.rest("DELETE", "/v1/agents/"+id, "")
	if code != 404 || !strings.Contains(body, "no agent with id "+id) {
		t.Fatalf("second DELETE /v1/agents/%s: %d %s, want 404 no agent with id", id, code, body)
	}
}

// checkOneError checks that log holds exactly one ERROR line and that it
// contains every want.
func checkOneError(t *testing.T, log string, want ...string) {
	t.Helper()
	var errs []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "[ERROR]") {
			errs = append(errs, line)
		}
	}
	if len(errs) != 1 {
		t.Fatalf("%d ERROR lines, want 1:\n%s", len(errs), strings.Join(errs, ""))
	}
	for _, w := range want {
		if !strings.Contains(errs[0], w) {
			t.Errorf("the ERROR line does not say %q: %s", w, errs[0])
		}
	}
}
