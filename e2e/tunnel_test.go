package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/agent"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// loopback lets an agent reach targets on 127.0.0.1: loopback must be
// advertised explicitly.
var loopback = []string{"127.0.0.0/8"}

func TestTunnelSessionRoundTrip(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, []string{"contoso.test"})
	startAgent(t, fastAgent(dir))
	a := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	if len(a.GetSubnets()) != 1 || a.GetSubnets()[0] != "127.0.0.0/8" || len(a.GetDomains()) != 1 ||
		a.GetDomains()[0].GetDomain() != "contoso.test" || a.GetRemoteAddr() == "" || a.GetConnectedAt() == nil {
		t.Fatalf("live view: %v", a)
	}

	target := tcpServer(t, echo)
	s, err := gw.dial(id, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if got := gw.agentView(id).GetActiveSessions(); got != 1 {
		t.Errorf("active_sessions = %d during a session, want 1", got)
	}
	s.CloseWrite()
	if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q %v", rest, err)
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for gw.agentView(id).GetActiveSessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("active_sessions did not return to 0")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTunnelTransfers(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	sizes := []int64{1 << 20, 100 << 20}
	if testing.Short() {
		sizes = sizes[:1]
	}
	hashTarget := tcpServer(t, hasher)
	for _, n := range sizes {
		t.Run(fmt.Sprintf("upload %d MiB", n>>20), func(t *testing.T) {
			s, err := gw.dial(id, hashTarget)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			uploadAndHash(t, s, n)
		})
		t.Run(fmt.Sprintf("download %d MiB", n>>20), func(t *testing.T) {
			s, err := gw.dial(id, tcpServer(t, source(n)))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			downloadAndHash(t, s, n)
		})
	}
}

// The target keeps talking after the client closed its sending side.
func TestTunnelHalfClose(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	target := tcpServer(t, func(c *net.TCPConn) {
		got, _ := io.ReadAll(c) // until the client's FIN
		for i := range 3 {
			fmt.Fprintf(c, "late reply %d to %s\n", i, got)
			time.Sleep(20 * time.Millisecond)
		}
		c.CloseWrite()
	})
	s, err := gw.dial(id, target)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("question"))
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	want := "late reply 0 to question\nlate reply 1 to question\nlate reply 2 to question\n"
	if err != nil || string(got) != want {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestTunnelThousandConcurrentSessions(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)

	const n = 1000
	sessions := make([]servertest.AgentSession, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			s, err := gw.dial(id, target)
			if err != nil {
				errs <- err
				return
			}
			sessions[i] = s
			msg := fmt.Sprintf("session %d", i)
			s.Write([]byte(msg))
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("session %d: %q %v", i, buf, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := gw.agentView(id).GetActiveSessions(); got != n {
		t.Errorf("active_sessions = %d with %d open, want %d", got, n, n)
	}
	for _, s := range sessions {
		s.Close()
	}
}

func TestTunnelRefusals(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	// 10.0.0.0/8 only: loopback is not advertised.
	dir, id := enrollAgent(t, gw, "office", []string{"10.0.0.0/8"}, []string{"contoso.test"})
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)
	_, port, _ := net.SplitHostPort(target)

	cases := []struct {
		name, target, reason string
	}{
		// Refused before any packet is sent: 192.0.2.0/24 is TEST-NET-1.
		{"ip outside subnets", "192.0.2.9:22", "not in advertised subnets"},
		{"loopback not advertised", target, "loopback"},
		{"name resolving outside subnets", "localhost:" + port, "localhost"},
		{"bad target", "no-port", "no-port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gw.dial(id, tc.target)
			if !isAgentError(err, servertest.ErrAgentRefused, tc.reason) {
				t.Fatalf("got %v, want a refusal mentioning %q", err, tc.reason)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
	if _, err := gw.dial("00000000-0000-4000-8000-000000000000", target); !isAgentError(err, servertest.ErrAgentNotConnected, "not connected") {
		t.Fatalf("unknown agent: %v", err)
	}
}

// A killed agent: its sessions fail within the idle timeout and it shows
// offline; a new process of the same agent comes back.
func TestTunnelAgentKilled(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.QUICIdleTimeout = server.Duration(2 * time.Second)
	})
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	cmd, _ := agentProcess(t, dir)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)

	s, err := gw.dial(id, tcpServer(t, source(1<<40))) // endless
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		if _, err = s.Read(buf); err != nil {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatal("session still reading 10 s after the agent was killed")
		}
	}
	t.Logf("session failed %v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 5*time.Second)

	agentProcess(t, dir)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
}

// The agent comes back by itself after a gateway restart.
func TestTunnelGatewayRestart(t *testing.T) {
	dataDir := t.TempDir()
	gw := startGateway(t, dataDir, nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	samePorts := func(c *server.Config) {
		c.Listen, c.QUICListen = gw.g.Addr().String(), gw.g.QUICAddr().String()
	}
	gw.stop()

	gw2 := startGateway(t, dataDir, samePorts)
	gw2.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
	s, err := gw2.dial(id, tcpServer(t, hasher))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	uploadAndHash(t, s, 1<<16)
}

// A second connection with the same identity replaces the first, and the
// first one's cleanup leaves the second registered.
func TestTunnelSupersede(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	first := startAgent(t, fastAgent(dir))
	a1 := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	// The second agent process of the same identity; the first one is told
	// "connection-superseded" and would reconnect, so stop it once replaced.
	second := startAgent(t, fastAgent(dir))
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := gw.agentView(id)
		if a.GetConnectedAt().AsTime().After(a1.GetConnectedAt().AsTime()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second connection never replaced the first")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.stop()
	time.Sleep(200 * time.Millisecond)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	s, err := gw.dial(id, tcpServer(t, echo))
	if err != nil {
		t.Fatalf("after supersede: %v", err)
	}
	s.Close()
	second.stop()
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 5*time.Second)
}

func TestTunnelDeleteAgent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	deleted := startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	otherDir, otherID := enrollAgent(t, gw, "other", loopback, nil)
	startAgent(t, fastAgent(otherDir))
	gw.waitStatus(otherID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin := outpostv1.NewAgentAdminServiceClient(gw.conn())
	start := time.Now()
	if _, err := admin.DeleteAgent(ctx, &outpostv1.DeleteAgentRequest{AgentId: id}); err != nil {
		t.Fatal(err)
	}
	// Deleted agents are gone from the API; the tunnel must be closed within 1 s.
	for {
		if _, err := gw.dial(id, "127.0.0.1:1"); isAgentError(err, servertest.ErrAgentNotConnected, "") {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("deleted agent still connected after 1 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Refused again at its reconnect, the agent stops for good, saying to
	// enroll it again.
	err := deleted.exit(t, 10*time.Second)
	if !errors.Is(err, agent.ErrPermanent) || !strings.Contains(err.Error(), "deleted") ||
		!strings.Contains(err.Error(), "outpost agent enroll") {
		t.Fatalf("deleted agent's Run: %v, want a permanent error saying it was deleted and how to enroll", err)
	}
	t.Logf("the deleted agent stopped %v after the delete: %v", time.Since(start).Round(time.Millisecond), err)
	if _, err := gw.dial(id, "127.0.0.1:1"); !isAgentError(err, servertest.ErrAgentNotConnected, "") {
		t.Fatalf("deleted agent reconnected: %v", err)
	}
	if _, err := admin.GetAgent(ctx, &outpostv1.GetAgentRequest{AgentId: id}); err == nil {
		t.Fatal("deleted agent still listed")
	}
	// Deleting it again is NotFound, in the API's words.
	_, err = admin.DeleteAgent(ctx, &outpostv1.DeleteAgentRequest{AgentId: id})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no agent with id "+id {
		t.Fatalf("second DeleteAgent: %v, want NotFound %q", err, "no agent with id "+id)
	}
	if gw.agentView(otherID).GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE {
		t.Fatal("the other agent was disturbed")
	}
}

// "outpost agent run --metrics-listen" serves the agent's metrics: the
// tunnel state, live sessions and the bytes relayed.
func TestAgentMetricsEndpoint(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	_, stderr := agentProcess(t, dir, "--metrics-listen", "127.0.0.1:0")
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
	m := regexp.MustCompile(`serving metrics: url=(http://127\.0\.0\.1:\d+/metrics)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatal("the agent did not log its metrics URL")
	}
	get := func() string {
		t.Helper()
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	s, err := gw.dial(id, tcpServer(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("metrics")
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	// The relay counts a direction's bytes after its write returns, which
	// may be after the echo is back here: read until the figures agree.
	wants := []string{
		"outpost_agent_connected 1\n",
		"outpost_agent_sessions_active 1\n",
		"outpost_agent_bytes_to_target_total 7\n",
		"outpost_agent_bytes_from_target_total 7\n",
		"outpost_agent_cert_renewal_failures_total 0\n",
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		body := get()
		var missing []string
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent /metrics lacks %q after 5 s:\n%s", missing, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
