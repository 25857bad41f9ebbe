package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/server/servertest"
)

// fastAgent is the agent tuning tests use: quick reconnects.
func fastAgent(dir string) agent.RunnerConfig {
	return agent.RunnerConfig{
		ConfigDir:    dir,
		BackoffMin:   50 * time.Millisecond,
		BackoffMax:   300 * time.Millisecond,
		DrainTimeout: 5 * time.Second,
	}
}

// enrollAgent enrolls a new agent on gw with the given routes and returns its
// config dir and id.
func enrollAgent(t *testing.T, gw *gateway, name string, subnets, domains []string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: name})
	res, err := enroll(t, tok, dir, func(o *agent.EnrollOptions) {
		o.Subnets, o.Domains = subnets, domains
	})
	if err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	return dir, res.AgentID
}

// runningAgent is an in-process agent.
type runningAgent struct {
	r    *agent.Runner
	stop func()
	// finished is closed when Run has returned err; exited marks err as
	// checked by the test (stop then does not report it).
	finished chan struct{}
	err      error
	exited   atomic.Bool
}

// startAgent runs an agent until the test ends (or stop); Run returning an
// error fails the test unless the test waited for it with exit.
func startAgent(t *testing.T, opts agent.RunnerConfig) *runningAgent {
	t.Helper()
	r, err := agent.NewRunner(opts, testLogger(t, "agent"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{r: r, finished: make(chan struct{})}
	go func() {
		ra.err = r.Run(ctx)
		close(ra.finished)
	}()
	var once sync.Once
	ra.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-ra.finished:
				if ra.err != nil && !ra.exited.Load() {
					t.Errorf("agent Run: %v", ra.err)
				}
			case <-time.After(20 * time.Second):
				t.Error("agent did not stop within 20 s")
			}
		})
	}
	t.Cleanup(ra.stop)
	return ra
}

// exit waits up to within for Run to return by itself, and returns its
// error.
func (ra *runningAgent) exit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-ra.finished:
		ra.exited.Store(true)
		return ra.err
	case <-time.After(within):
		t.Fatalf("agent Run still running after %v", within)
		return nil
	}
}

// agentView reads an agent through the API.
func (gw *gateway) agentView(id string) *outpostv1.Agent {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := outpostv1.NewAgentAdminServiceClient(gw.conn()).GetAgent(ctx, &outpostv1.GetAgentRequest{AgentId: id})
	if err != nil {
		gw.t.Fatalf("GetAgent: %v", err)
	}
	return resp.GetAgent()
}

// waitStatus polls until the agent has status (and, when online, its routes).
func (gw *gateway) waitStatus(id string, want outpostv1.AgentStatus, within time.Duration) *outpostv1.Agent {
	gw.t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := gw.agentView(id)
		if a.GetStatus() == want && (want != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || a.GetRouteEpoch() > 0) {
			return a
		}
		if time.Now().After(deadline) {
			gw.t.Fatalf("agent %s is %v after %v, want %v", id, a.GetStatus(), within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dial opens a session through an agent.
func (gw *gateway) dial(agentID, target string) (servertest.AgentSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	return servertest.DialAgent(ctx, gw.g, agentID, target)
}

// tcpServer runs handle for every connection on a loopback listener until
// the test ends, and returns its address.
func tcpServer(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	return testtarget.Listen(t, "127.0.0.1:0", handle).String()
}

// The targets tcpServer runs, and the byte stream they send or check.
var (
	echo       = testtarget.Echo       // copies everything back, then half-closes
	hasher     = testtarget.Hash       // answers the SHA-256 of what it read, after the client's EOF
	source     = testtarget.Source     // sends n pattern bytes, then half-closes
	pattern    = testtarget.Pattern    // a deterministic byte stream of n bytes
	patternSum = testtarget.PatternSum // the SHA-256 of pattern(n)
)

// uploadAndHash sends n bytes through s to a hasher target and checks the
// digest it answers.
func uploadAndHash(t *testing.T, s servertest.AgentSession, n int64) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, pattern(n))
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read digest: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("upload: %v", err)
	}
	if !bytes.Equal(got, patternSum(n)) {
		t.Fatalf("upload of %d bytes: digest mismatch", n)
	}
}

// downloadAndHash reads everything from s and compares it with n pattern bytes.
func downloadAndHash(t *testing.T, s servertest.AgentSession, n int64) {
	t.Helper()
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	got, err := io.Copy(h, s)
	if err != nil {
		t.Fatalf("download after %d bytes: %v", got, err)
	}
	if got != n || !bytes.Equal(h.Sum(nil), patternSum(n)) {
		t.Fatalf("download: %d bytes, digest match %v; want %d", got, bytes.Equal(h.Sum(nil), patternSum(n)), n)
	}
}

// agentProcess runs "outpost agent run" with extra flags as a child
// process; its stderr is kept in the returned writer.
func agentProcess(t *testing.T, dir string, extra ...string) (*exec.Cmd, *testlog.Writer) {
	t.Helper()
	cmd := exec.Command(outpostBinary(t), append([]string{"agent", "run", "--config-dir", dir, "--log-level", "debug"}, extra...)...)
	stderr := testlog.New(t)
	cmd.Stdout, cmd.Stderr = testlog.New(t), stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stderr
}

// isAgentError reports whether err is an *servertest.AgentError wrapping target
// whose text contains substr.
func isAgentError(err, target error, substr string) bool {
	var ae *servertest.AgentError
	return errors.As(err, &ae) && errors.Is(err, target) && strings.Contains(err.Error(), substr)
}
