package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// A draining agent withdraws its routes at once (the gateway stops routing
// to it), refuses new sessions with "agent draining", lets its live session
// finish, then disconnects; another agent with the same subnet keeps
// serving throughout.
func TestLifecycleDrain(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dirA, idA := enrollAgent(t, gw, "draining", loopback, nil)
	dirB, idB := enrollAgent(t, gw, "standby", loopback, nil)
	optsA, _ := lifecycleAgent(t, dirA)
	optsA.DrainTimeout = 20 * time.Second
	optsB, _ := lifecycleAgent(t, dirB)
	ra := startAgent(t, optsA)
	startAgent(t, optsB)
	a1 := gw.waitStatus(idA, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	gw.waitStatus(idB, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)

	live, err := gw.dial(idA, target)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := live.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(live, buf); err != nil || string(buf) != msg {
			t.Fatalf("live session: %q, %v", buf, err)
		}
	}
	roundTrip("before the drain")

	stopped := lcStopAsync(ra) // SIGTERM
	lcUntil(t, 5*time.Second, "the draining agent's routes withdrawn", func() bool {
		a := gw.agentView(idA)
		return a.GetRouteEpoch() == a1.GetRouteEpoch()+1 && len(a.GetSubnets()) == 0 && len(a.GetDomains()) == 0
	})
	if a := gw.agentView(idA); a.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_ONLINE || a.GetActiveSessions() != 1 {
		t.Fatalf("draining agent: %v with %d sessions, want online with 1", a.GetStatus(), a.GetActiveSessions())
	}
	if _, err := gw.dial(idA, target); !isAgentError(err, servertest.ErrAgentRefused, "agent draining") {
		t.Fatalf("new session to the draining agent: %v", err)
	}
	if b := gw.agentView(idB); len(b.GetSubnets()) != 1 || b.GetSubnets()[0] != "127.0.0.0/8" {
		t.Fatalf("the other agent's routes: %v", b.GetSubnets())
	}
	lcEcho(t, gw, idB, target, "routed elsewhere")
	roundTrip("during the drain")
	select {
	case <-stopped:
		t.Fatal("the agent stopped while its session was live")
	default:
	}

	if err := live.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(live); err != nil || len(rest) != 0 {
		t.Fatalf("end of the live session: %q, %v", rest, err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop after its last session ended")
	}
	gw.waitStatus(idA, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 5*time.Second)
	lcEcho(t, gw, idB, target, "after the drain")
}

// A session that outlives the drain timeout is cut; the agent stops then.
func TestLifecycleDrainTimeout(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	opts, _ := lifecycleAgent(t, dir)
	opts.DrainTimeout = 300 * time.Millisecond
	ra := startAgent(t, opts)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	live, err := gw.dial(id, tcpServer(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	began := time.Now()
	select {
	case <-lcStopAsync(ra):
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop after its drain timeout")
	}
	if d := time.Since(began); d < 300*time.Millisecond {
		t.Fatalf("stopped after %v, before the drain timeout", d)
	}
	// The session was cut: reading it fails (Close at the end of the test
	// unblocks the read if it does not).
	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(live)
		readErr <- err
	}()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the cut session ended cleanly")
		}
	case <-time.After(10 * time.Second):
		live.Close()
		<-readErr
		t.Fatal("the session was not cut")
	}
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 5*time.Second)
}

// When its Run context ends (SIGTERM), the gateway stops accepting new
// client sessions at once, lets a live one finish, and only then closes the
// agent connections, with "shutdown". A session that outlives the shutdown
// timeout is cut.
func TestGatewayDrain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		finish  bool // the client ends its session during the drain
	}{
		{"a live session finishes", 20 * time.Second, true},
		{"a session outliving the timeout is cut", 1500 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.ShutdownTimeout = server.Duration(tc.timeout) })
			dir, id := enrollAgent(t, gw, "office", loopback, nil)
			startAgent(t, fastAgent(dir))
			gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
			// A hand-rolled agent that advertises nothing watches how and
			// when the gateway closes the agent connections.
			obsDir, obsID := enrollAgent(t, gw, "observer", nil, nil)
			obs := rawDial(t, gw, loadCert(t, obsDir))
			ctrl, err := obs.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			if err := dataplane.NewControlWriter(ctrl).Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1}); err != nil {
				t.Fatal(err)
			}
			gw.waitStatus(obsID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

			resp := gw.session(&outpostv1.CreateSessionRequest{Target: tcpServer(t, echo), AgentId: id, Reusable: true})
			live, err := openSession(t, resp)
			if err != nil {
				t.Fatal(err)
			}
			defer live.Close()
			roundTrip := func(msg string) error {
				if _, err := live.Write([]byte(msg)); err != nil {
					return err
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(live, buf); err != nil {
					return err
				}
				if string(buf) != msg {
					return fmt.Errorf("echo %q, want %q", buf, msg)
				}
				return nil
			}
			if err := roundTrip("before the drain"); err != nil {
				t.Fatal(err)
			}

			began := time.Now()
			stopped := make(chan struct{})
			go func() {
				gw.stop()
				close(stopped)
			}()
			lcUntil(t, 5*time.Second, "the entry refusing new sessions", func() bool {
				s, err := openSession(t, resp)
				if err != nil {
					return true
				}
				s.Close()
				return false
			})
			if err := roundTrip("during the drain"); err != nil {
				t.Fatalf("live session during the drain: %v", err)
			}
			select {
			case <-obs.Context().Done():
				t.Fatalf("agent connections closed while a session was live: %v", context.Cause(obs.Context()))
			case <-stopped:
				t.Fatal("the gateway stopped while a session was live")
			default:
			}

			if tc.finish {
				live.Close()
			}
			select {
			case <-stopped:
			case <-time.After(tc.timeout + 10*time.Second):
				t.Fatal("the gateway did not stop")
			}
			took := time.Since(began)
			switch {
			case tc.finish && took > tc.timeout/2:
				t.Errorf("the gateway took %v to stop after its last session ended", took)
			case !tc.finish && took < tc.timeout:
				t.Errorf("the gateway stopped after %v, before its %v shutdown timeout", took, tc.timeout)
			}
			if !tc.finish {
				if err := roundTrip("after the timeout"); err == nil {
					t.Error("the session outlived the gateway")
				}
			}
			var appErr *quic.ApplicationError
			if err := context.Cause(obs.Context()); !errors.As(err, &appErr) || !appErr.Remote || appErr.ErrorMessage != "shutdown" {
				t.Fatalf("agent connection ended with %v, want the gateway's \"shutdown\"", err)
			}
			t.Logf("gateway stopped %v after SIGTERM", took.Round(time.Millisecond))
		})
	}
}
