package e2e

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
)

// The optimistic first flight (DESIGN.md §9): the gateway writes the
// client's first bytes on the agent's stream right after the ConnectRequest,
// without waiting for the ConnectResponse. These tests play a strict seed
// protocol v1 agent (freezableAgent reads exactly one framed message from the
// stream, v1Agent answers and then relays what follows) over real QUIC.

// recorder is a loopback echo target that keeps every byte it received and
// counts its connections.
type recorder struct {
	mu    sync.Mutex
	got   []byte
	conns int
}

func newRecorder(t *testing.T) (*recorder, string) {
	r := &recorder{}
	addr := tcpServer(t, func(c *net.TCPConn) {
		r.mu.Lock()
		r.conns++
		r.mu.Unlock()
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.got = append(r.got, buf[:n]...)
				r.mu.Unlock()
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				c.CloseWrite()
				return
			}
		}
	})
	return r, addr
}

func (r *recorder) seen() ([]byte, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.got), r.conns
}

// v1Agent is how a v1 agent serves a session once its ConnectRequest is
// read: after dialDelay (a slow dial) it refuses with refusal, if set, or
// dials target, answers Success and relays the stream's bytes as they come.
// With early set, it first waits (up to 10 s) for that many bytes on the
// stream and reports on sawEarly whether they came before its answer, then
// passes them to the target before relaying the rest.
type v1Agent struct {
	target    string
	dialDelay time.Duration
	refusal   string
	early     int
	sawEarly  chan bool
}

func (a *v1Agent) serve(s *quic.Stream) {
	select {
	case <-time.After(a.dialDelay):
	case <-s.Context().Done():
		return
	}
	var early []byte
	if a.early > 0 {
		early = make([]byte, a.early)
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadFull(s, early)
		s.SetReadDeadline(time.Time{})
		a.sawEarly <- err == nil
		if err != nil {
			s.CancelRead(0)
			s.CancelWrite(0)
			return
		}
	}
	resp := dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultSuccess}
	if a.refusal != "" {
		resp.Result, resp.Reason = dataplane.ResultError, a.refusal
		frame, _ := resp.AppendFrame(nil)
		s.Write(frame)
		s.CancelRead(0) // what follows the request is dropped unread
		s.Close()
		return
	}
	conn, err := net.Dial("tcp", a.target)
	if err != nil {
		s.CancelRead(0)
		s.CancelWrite(0)
		return
	}
	defer conn.Close()
	frame, _ := resp.AppendFrame(nil)
	if _, err := s.Write(frame); err != nil {
		return
	}
	if _, err := conn.Write(early); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(conn, s)
		conn.(*net.TCPConn).CloseWrite()
	})
	io.Copy(s, conn)
	s.Close()
	wg.Wait()
}

// firstFlightSession opens a WebSocket session to target (through agentID
// if set), writes first at
// once — while the gateway is still opening the session — and then more,
// and checks the echo of both.
func firstFlightSession(t *testing.T, gw *gateway, target, agentID string, first, more []byte) {
	t.Helper()
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: agentID}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write(first); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(first))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("echo of the first bytes: %q, %v", got, err)
	}
	if _, err := s.Write(more); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len(more))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, more) {
		t.Fatalf("echo of the later bytes: %q, %v", got, err)
	}
}

// checkOnce checks that the target got want exactly once, on one
// connection.
func checkOnce(t *testing.T, r *recorder, want []byte) {
	t.Helper()
	got, conns := r.seen()
	if conns != 1 || !bytes.Equal(got, want) {
		t.Fatalf("the target saw %d connection(s) and %q, want 1 and %q", conns, got, want)
	}
}

func TestFirstFlightStrictV1Agent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	first, more := []byte("first flight: CLIENT HELLO"), []byte("after the answer")

	// The first bytes reach the agent before it answers (it waits for
	// them first), and the target exactly once.
	t.Run("accepts", func(t *testing.T) {
		r, target := newRecorder(t)
		dir, id := enrollAgent(t, gw, "v1-accepts", loopback, nil)
		a := &v1Agent{target: target, early: len(first), sawEarly: make(chan bool, 1)}
		freezableAgent(t, gw, dir, a.serve)
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		firstFlightSession(t, gw, target, id, first, more)
		if !<-a.sawEarly {
			t.Fatal("the first bytes did not reach the agent before its answer")
		}
		checkOnce(t, r, append(bytes.Clone(first), more...))
	})

	// A refusal reaches the client; the early bytes are dropped with the
	// stream and no target sees them.
	t.Run("refuses", func(t *testing.T) {
		r, target := newRecorder(t)
		dir, id := enrollAgent(t, gw, "v1-refuses", loopback, nil)
		a := &v1Agent{target: target, refusal: "target is not in advertised subnets"}
		freezableAgent(t, gw, dir, a.serve)
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: id}))
		if err != nil {
			t.Fatal(err)
		}
		s.Write(first)
		if reason := readFailure(t, s); !strings.Contains(reason, "target is not in advertised subnets") {
			t.Fatalf("the client read %q, want the agent's refusal", reason)
		}
		if got, conns := r.seen(); conns != 0 || len(got) != 0 {
			t.Fatalf("the target saw %d connection(s) and %q", conns, got)
		}
	})

	// A 3 s dial: the early bytes wait in the stream and are not lost.
	t.Run("slow", func(t *testing.T) {
		r, target := newRecorder(t)
		dir, id := enrollAgent(t, gw, "v1-slow", loopback, nil)
		a := &v1Agent{target: target, dialDelay: 3 * time.Second}
		freezableAgent(t, gw, dir, a.serve)
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		start := time.Now()
		firstFlightSession(t, gw, target, id, first, more)
		if d := time.Since(start); d < 3*time.Second {
			t.Fatalf("served after %v, before the agent's 3 s dial", d)
		}
		checkOnce(t, r, append(bytes.Clone(first), more...))
	})
}

// With two candidates and the first silent, the hedge starts the second:
// the first bytes reach exactly one target, once — the silent agent, which
// wakes after the second answered, never forwards them.
func TestFirstFlightHedged(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	r, target := newRecorder(t)
	goodDir, goodID := enrollAgent(t, gw, "good", loopback, nil)
	freezableAgent(t, gw, goodDir, (&v1Agent{target: target}).serve)
	gw.waitStatus(goodID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	dir, id := enrollAgent(t, gw, "sleeper", loopback, nil) // connected last: tried first
	served := make(chan struct{}, 1)
	sleeper := freezableAgent(t, gw, dir, func(s *quic.Stream) {
		(&v1Agent{target: target}).serve(s)
		served <- struct{}{}
	})
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)

	sleeper.frozen.Store(true)
	first, more := []byte("hedged first flight"), []byte("and the rest")
	start := time.Now()
	firstFlightSession(t, gw, target, "", first, more)
	if d := time.Since(start); d < server.DefaultHedgeDelay {
		t.Fatalf("served after %v, before the hedge delay", d)
	}
	checkOnce(t, r, append(bytes.Clone(first), more...))

	// The sleeper wakes: whatever it makes of the stream it was sent (a
	// late answer the gateway closes, or a reset), no byte reaches the
	// target through it.
	sleeper.frozen.Store(false)
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 15*time.Second)
	select {
	case <-served:
	case <-time.After(3 * time.Second):
		// The reset reached it before the request: it never served it.
	}
	got, _ := r.seen()
	if !bytes.Equal(got, append(bytes.Clone(first), more...)) {
		t.Fatalf("after the sleeper woke the target has %q", got)
	}
}
