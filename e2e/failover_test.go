package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
)

// freezable is a UDP socket that can stop carrying packets both ways, as the
// socket of a killed, frozen or cut-off agent does: nothing it sends leaves,
// nothing sent to it arrives.
type freezable struct {
	net.PacketConn
	frozen atomic.Bool
}

func (f *freezable) WriteTo(b []byte, addr net.Addr) (int, error) {
	if f.frozen.Load() {
		return len(b), nil
	}
	return f.PacketConn.WriteTo(b, addr)
}

func (f *freezable) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := f.PacketConn.ReadFrom(b)
		if err != nil || !f.frozen.Load() {
			return n, addr, err
		}
	}
}

// freezableAgent is a hand-rolled agent on a freezable socket, advertising
// 127.0.0.0/8 and serving each session with serve, in a goroutine of its
// own, after reading its ConnectRequest.
func freezableAgent(t *testing.T, gw *gateway, dir string, serve func(*quic.Stream)) *freezable {
	t.Helper()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := &freezable{PacketConn: udp}
	tr := &quic.Transport{Conn: pc}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.g.CACertPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, gw.g.QUICAddr(), transport.ClientTLS(&tls.Config{
		RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{loadCert(t, dir)},
	}), transport.Config{}.QUIC())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		pc.frozen.Store(false)
		conn.CloseWithError(0, "test over")
		wg.Wait()
		tr.Close()
		udp.Close()
	})
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := dataplane.NewControlWriter(ctrl).Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1,
		Subnets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for {
			s, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				if _, err := dataplane.NewSessionReader(s).ReadConnectRequest(); err != nil {
					s.CancelRead(0)
					s.CancelWrite(0)
					return
				}
				serve(s)
			})
		}
	})
	return pc
}

// answerAfter answers Success after delay — a target slow to dial — then
// echoes the session's bytes.
func answerAfter(delay time.Duration) func(*quic.Stream) {
	return func(s *quic.Stream) {
		select {
		case <-time.After(delay):
		case <-s.Context().Done():
			return
		}
		frame, _ := (&dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultSuccess}).AppendFrame(nil)
		if _, err := s.Write(frame); err != nil {
			return
		}
		io.Copy(s, s)
		s.Close()
	}
}

// timedEcho runs echoOnce and returns how long it took, session set-up
// included.
func timedEcho(t *testing.T, gw *gateway, target string) time.Duration {
	t.Helper()
	start := time.Now()
	echoOnce(t, gw, target)
	return time.Since(start)
}

// onlineAgent enrolls an agent advertising loopback, runs it in-process and
// returns its id once it is online.
func (gw *gateway) onlineAgent(name string) string {
	gw.t.Helper()
	dir, id := enrollAgent(gw.t, gw, name, loopback, nil)
	startAgent(gw.t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	return id
}

// An agent that stops answering at the transport (its process frozen) costs
// the next session no more than the hedge delay: the next candidate is
// started in parallel and serves it; the silent agent is then tried last and,
// within seconds, skipped and shown unresponsive. When it is heard again it
// is online.
func TestHedgeSilentAgent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	goodID := gw.onlineAgent("good")
	target := tcpServer(t, echo)
	dir, id := enrollAgent(t, gw, "frozen", loopback, nil)
	frozen := freezableAgent(t, gw, dir, answerAfter(0))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	// Connected last, the frozen agent is the first candidate: the first
	// session waits the hedge delay.
	frozen.frozen.Store(true)
	froze := time.Now()
	d := timedEcho(t, gw, target)
	t.Logf("first session after the freeze: %v", d)
	if d < server.DefaultHedgeDelay || d > server.DefaultHedgeDelay+time.Second {
		t.Errorf("the first session took %v, want the hedge delay (%v) plus a round trip", d, server.DefaultHedgeDelay)
	}
	if m := gw.metric(`outpost_session_failovers_total{reason="no_sign_of_life"}`); m != 1 {
		t.Errorf("no_sign_of_life failovers: %v", m)
	}
	// Demoted: the next session goes to the good agent first.
	if d := timedEcho(t, gw, target); d > server.DefaultHedgeDelay/2 {
		t.Errorf("the second session took %v: the silent agent was tried first again", d)
	}
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE, 5*time.Second)
	t.Logf("the frozen agent was shown unresponsive %v after the freeze", time.Since(froze).Round(time.Millisecond))
	if gw.agentView(goodID).GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE {
		t.Error("the good agent is not online")
	}
	if d := timedEcho(t, gw, target); d > server.DefaultHedgeDelay/2 {
		t.Errorf("a session after the agent was marked unresponsive took %v", d)
	}

	frozen.frozen.Store(false)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
}

// The first success wins, whichever candidate it comes from: an agent that
// comes back after the hedge started the next one serves the session, and
// the next one, still dialing, is cancelled without leaving a session open.
func TestHedgeFirstSuccessWins(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	target := tcpServer(t, echo)
	slowDir, slowID := enrollAgent(t, gw, "slow", loopback, nil)
	freezableAgent(t, gw, slowDir, answerAfter(5*time.Second))
	gw.waitStatus(slowID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	dir, id := enrollAgent(t, gw, "sleeper", loopback, nil) // connected last: tried first
	sleeper := freezableAgent(t, gw, dir, answerAfter(0))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)

	sleeper.frozen.Store(true)
	wake := time.AfterFunc(server.DefaultHedgeDelay*3/2, func() { sleeper.frozen.Store(false) })
	defer wake.Stop()
	start := time.Now()
	echoSession(t, gw, target)
	if d := time.Since(start); d < server.DefaultHedgeDelay*3/2 || d > 5*time.Second {
		t.Fatalf("served after %v: want after the sleeper woke, before the slow agent answered", d)
	}
	if n := gw.agentView(id).GetActiveSessions(); n != 1 {
		t.Errorf("the sleeper carries %d sessions, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for gw.agentView(slowID).GetActiveSessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled candidate still holds a session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := gw.metric(`outpost_session_failovers_total{reason="no_sign_of_life"}`); m != 1 {
		t.Errorf("no_sign_of_life failovers: %v", m)
	}
}

// An agent that is alive but slow to dial its target is waited for, not
// abandoned: no other candidate is asked. A refusal moves to the next
// candidate at once.
func TestHedgeSlowDialAndRefusal(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	goodID := gw.onlineAgent("good")
	target := tcpServer(t, echo)

	t.Run("slow dial", func(t *testing.T) {
		dir, id := enrollAgent(t, gw, "slow", loopback, nil)
		freezableAgent(t, gw, dir, answerAfter(3*time.Second))
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		start := time.Now()
		echoSession(t, gw, target) // open until the subtest ends
		if d := time.Since(start); d < 3*time.Second {
			t.Fatalf("served in %v: not through the slow agent", d)
		}
		if n := gw.agentView(id).GetActiveSessions(); n != 1 {
			t.Errorf("the slow agent carries %d sessions, want 1", n)
		}
		if n := gw.agentView(goodID).GetActiveSessions(); n != 0 {
			t.Errorf("the good agent carries %d sessions: a hedge loser was left open", n)
		}
		if m := gw.metric(`outpost_session_failovers_total{reason="no_sign_of_life"}`); m != -1 {
			t.Errorf("an alive agent was hedged: %v", m)
		}
	})
	t.Run("refusal", func(t *testing.T) {
		dir, id := enrollAgent(t, gw, "refuser", loopback, nil)
		freezableAgent(t, gw, dir, func(s *quic.Stream) {
			frame, _ := (&dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultError, Reason: "nope"}).AppendFrame(nil)
			s.Write(frame)
			s.Close()
		})
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		if d := timedEcho(t, gw, target); d > server.DefaultHedgeDelay/2 {
			t.Errorf("served in %v after a refusal", d)
		}
		if m := gw.metric(`outpost_session_failovers_total{reason="refused"}`); m != 1 {
			t.Errorf("refused failovers: %v", m)
		}
	})
}

// kill -9 of the agent routing prefers: new sessions reach the surviving
// agent within the hedge delay, the killed agent is shown unresponsive
// within 5 s, and the idle survivor is never taken for dead.
func TestFailoverAgentKilled(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	goodID := gw.onlineAgent("survivor")
	connectedAt := gw.agentView(goodID).GetConnectedAt().AsTime()
	target := tcpServer(t, echo)
	dir, id := enrollAgent(t, gw, "victim", loopback, nil)
	cmd, _ := agentProcess(t, dir)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if d := timedEcho(t, gw, target); d > server.DefaultHedgeDelay+time.Second {
		t.Errorf("the first session after the kill took %v", d)
	}
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE, 5*time.Second)
	t.Logf("the killed agent was shown unresponsive %v after the kill", time.Since(killed).Round(time.Millisecond))
	if d := timedEcho(t, gw, target); d > server.DefaultHedgeDelay/2 {
		t.Errorf("a session after the agent was marked unresponsive took %v", d)
	}
	// The survivor, idle all along, is online on its first connection.
	if a := gw.agentView(goodID); a.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || !a.GetConnectedAt().AsTime().Equal(connectedAt) {
		t.Errorf("survivor: %v, connected at %v (first at %v)", a.GetStatus(), a.GetConnectedAt().AsTime(), connectedAt)
	}
}

// A healthy idle agent is never cut off or taken for silent, also when the
// gateway's idle timeout is short: the keep-alives of both ends fit inside
// it.
func TestFailoverIdleAgentKeptAlive(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.QUICIdleTimeout = server.Duration(2 * time.Second)
	})
	id := gw.onlineAgent("idle")
	first := gw.agentView(id).GetConnectedAt().AsTime()
	for end := time.Now().Add(3 * 2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		a := gw.agentView(id)
		if a.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || !a.GetConnectedAt().AsTime().Equal(first) {
			t.Fatalf("idle agent: %v, connected at %v (first at %v)", a.GetStatus(), a.GetConnectedAt().AsTime(), first)
		}
	}
}

// With the default settings an idle agent's liveness is the gateway's
// keep-alive alone: its PINGs (every 1.5 s) reach the agent more often than
// the agent's idle heartbeat period (2 s), so the agent sends no Heartbeat
// of its own, and stays online. The periodic Heartbeat (60 s) is not due in
// the window.
func TestFailoverIdleAgentSendsNoHeartbeat(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	id := gw.onlineAgent("idle")
	const heartbeats = `outpost_control_messages_total{type="heartbeat"}`
	before := gw.metric(heartbeats)
	for end := time.Now().Add(3 * agent.DefaultIdleHeartbeat); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if n := gw.metric(heartbeats); n != before {
			t.Fatalf("the idle agent sent heartbeats (%v, then %v) while the gateway PINGed it", before, n)
		}
		if st := gw.agentView(id).GetStatus(); st != outpostv1.AgentStatus_AGENT_STATUS_ONLINE {
			t.Fatalf("the idle agent is %v", st)
		}
	}
}
