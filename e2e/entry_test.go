package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/client"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// session mints a session token through the API.
func (gw *gateway) session(req *outpostv1.CreateSessionRequest) *outpostv1.CreateSessionResponse {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(gw.conn()).CreateSession(ctx, req)
	if err != nil {
		gw.t.Fatalf("CreateSession: %v", err)
	}
	return resp
}

// openSession opens a session through the WebSocket entry (one WebSocket
// per session, as browsers use it), pinning the CA by its SPKI hash as a
// client given only the CreateSession answer would.
func openSession(t *testing.T, resp *outpostv1.CreateSessionResponse) (*wsstream.Stream, error) {
	t.Helper()
	c := newClient(t, resp)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c.OpenWebSocket(ctx)
}

// newClient returns a client of the entry for resp's token, closed at
// cleanup.
func newClient(t *testing.T, resp *outpostv1.CreateSessionResponse) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Gateway: resp.GetConnectUrl(), Token: resp.GetToken(), CAPin: resp.GetGatewayCaSpkiSha256()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readFailure reads s to its end and returns the gateway's failure reason.
func readFailure(t *testing.T, s *wsstream.Stream) string {
	t.Helper()
	_, err := io.ReadAll(s)
	reason, ok := wsstream.Failure(err)
	if !ok {
		t.Fatalf("session did not fail with a reason: %v", err)
	}
	return reason
}

// rawAgent is a hand-rolled agent advertising 127.0.0.0/8 that answers every
// session with answer (nil: close the connection without answering).
func rawAgent(t *testing.T, gw *gateway, dir string, answer *dataplane.ConnectResponse) *quic.Conn {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs/agent.pem"), filepath.Join(dir, "certs/agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn := rawDial(t, gw, cert)
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	w := dataplane.NewControlWriter(ctrl)
	if err := w.Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1,
		Subnets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			s, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			if _, err := dataplane.NewSessionReader(s).ReadConnectRequest(); err != nil {
				return
			}
			if answer == nil {
				conn.CloseWithError(0, "crash")
				return
			}
			frame, _ := answer.AppendFrame(nil)
			s.Write(frame)
			s.Close()
		}
	}()
	return conn
}

func TestEntrySessionThroughAgent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, hasher)

	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	if !strings.HasPrefix(resp.GetConnectUrl(), "wss://") || len(resp.GetGatewayCaSpkiSha256()) != 64 {
		t.Fatalf("CreateSession answer: %v", resp)
	}
	s, err := openSession(t, resp)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8 << 20
	go func() {
		io.Copy(s, pattern(n))
		s.CloseWrite() // half-close: the digest still comes back
	}()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, patternSum(n)) {
		t.Fatalf("digest through the entry: %x %v", got, err)
	}
	s.Close()

	// The audit row and the metrics.
	code, body := gw.restGet("/metrics")
	if code != 200 || !strings.Contains(body, `outpost_sessions_total{outcome="ok"} 1`) || !strings.Contains(body, "outpost_session_setup_seconds_count 1") {
		t.Errorf("metrics after one session:\n%s", grepLines(body, "outpost_session"))
	}
	gw.stop() // waits for the session's end to be recorded
	db := gw.auditDB()
	var (
		sid, tgt, agentID, decision, outcome, reason string
		up, down                                     int64
		ended                                        sql.NullInt64
	)
	err = db.QueryRow(`SELECT id, target, agent_id, decision, ended_at, bytes_up, bytes_down, outcome, reason FROM sessions`).
		Scan(&sid, &tgt, &agentID, &decision, &ended, &up, &down, &outcome, &reason)
	switch {
	case err != nil:
		t.Fatalf("audit row: %v", err)
	case sid != resp.GetSessionId() || tgt != target || agentID != id || !strings.HasPrefix(decision, "DECISION_AGENT: "):
		t.Errorf("audit row: session %s target %s agent %s decision %q", sid, tgt, agentID, decision)
	case !ended.Valid || up != n || down != sha256.Size || outcome != "ok" || reason != "":
		t.Errorf("audit row: ended %v, %d bytes up, %d down, outcome %q %q; want ended, %d, %d, ok", ended, up, down, outcome, reason, n, sha256.Size)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func TestEntryFailover(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	gw.onlineAgent("good")
	target := tcpServer(t, echo)

	t.Run("first agent refuses", func(t *testing.T) {
		dir, id := enrollAgent(t, gw, "refuser", loopback, nil)
		conn := rawAgent(t, gw, dir, &dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultError, Reason: "nope"})
		defer conn.CloseWithError(0, "done")
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		echoOnce(t, gw, target)
	})
	t.Run("first agent dies without answering", func(t *testing.T) {
		dir, id := enrollAgent(t, gw, "crasher", loopback, nil)
		rawAgent(t, gw, dir, nil)
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
		echoOnce(t, gw, target)
	})
}

// echoOnce opens a session to an echo target and checks a round trip.
func echoOnce(t *testing.T, gw *gateway, target string) {
	t.Helper()
	echoSession(t, gw, target).Close()
}

// echoSession opens a session to an echo target, checks a round trip and
// returns the session, still open (closed when the test ends).
func echoSession(t *testing.T, gw *gateway, target string) *wsstream.Stream {
	t.Helper()
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	return s
}

// When every agent fails the session fails with every reason, and the
// gateway never dials the target itself.
func TestEntryAllCandidatesFail(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	var accepted atomic.Int32
	target := tcpServer(t, func(c *net.TCPConn) { accepted.Add(1) })
	for _, name := range []string{"no-1", "no-2"} {
		dir, id := enrollAgent(t, gw, name, loopback, nil)
		// Together the reasons exceed a close frame's 123 bytes: the client
		// still gets them whole.
		rawAgent(t, gw, dir, &dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultError,
			Reason: "refused by " + name + ": target is not in advertised subnets 10.20.30.0/24, 10.20.31.0/24"})
		gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	}
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	reason := readFailure(t, s)
	for _, name := range []string{"no-1", "no-2"} {
		if !strings.Contains(reason, "refused by "+name+": target is not in advertised subnets 10.20.30.0/24, 10.20.31.0/24") {
			t.Fatalf("reason %q does not carry agent %s's whole reason", reason, name)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the target received %d connections", n)
	}
}

func TestEntryExplicitAgentAndDirect(t *testing.T) {
	// Direct connections only inside an explicit allow-list that names
	// loopback (a special range) as a /32.
	gw := startGateway(t, t.TempDir(), directToLoopback)
	_, id := enrollAgent(t, gw, "sleeping", loopback, nil) // enrolled, never started
	target := tcpServer(t, echo)

	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "not connected") {
		t.Fatalf("explicit agent offline: %q", reason)
	}
	// No agent advertises the target: the gateway dials it itself.
	echoOnce(t, gw, target)

	// By default direct connections are off: the same target is rejected.
	gw2 := startGateway(t, t.TempDir(), nil)
	s, err = openSession(t, gw2.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "direct connections are disabled") {
		t.Fatalf("direct disabled: %q", reason)
	}
}

// Direct connections on, with an allow-list that does not name loopback: the
// gateway's own loopback (and every special range) is refused, the client
// reads only a generic reason, and nothing is dialed.
func TestEntryDirectRefusesLoopbackOutsideAllowList(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.AllowDirect, c.DirectSubnets = true, []string{"0.0.0.0/0"}
	})
	var accepted atomic.Int32
	target := tcpServer(t, func(c *net.TCPConn) { accepted.Add(1) })
	_, port, _ := net.SplitHostPort(target)
	for _, tgt := range []string{target, "localhost:" + port} {
		s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: tgt}))
		if err != nil {
			t.Fatal(err)
		}
		reason := readFailure(t, s)
		if !strings.Contains(reason, "refused by policy") || strings.Contains(reason, "loopback") {
			t.Fatalf("%s: client reason %q, want the generic refusal only", tgt, reason)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(gw.conn()).ResolveTarget(ctx, &outpostv1.ResolveTargetRequest{Target: target})
	if err != nil || resp.GetDecision() != outpostv1.Decision_DECISION_REJECTED || !strings.Contains(resp.GetReason(), "loopback") {
		t.Fatalf("ResolveTarget %s: %v %v", target, resp, err)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the gateway dialed its own loopback %d time(s)", n)
	}
}

func TestEntryTokens(t *testing.T) {
	// The gateway's clock, advanced to expire a token instead of sleeping.
	clk := fakeclock.New(time.Now())
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.Now = clk.Now })
	target := tcpServer(t, echo)
	unauthorized := func(err error) bool { return err != nil && strings.Contains(err.Error(), "HTTP 401") }

	single := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	s, err := openSession(t, single)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := openSession(t, single); !unauthorized(err) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use of a single-use token: %v", err)
	}

	reusable := gw.session(&outpostv1.CreateSessionRequest{Target: target, Reusable: true})
	for range 3 {
		s, err := openSession(t, reusable)
		if err != nil {
			t.Fatalf("reusable token: %v", err)
		}
		s.Close()
	}

	short := gw.session(&outpostv1.CreateSessionRequest{Target: target, Ttl: durationpb.New(time.Second)})
	clk.Advance(2 * time.Second) // session tokens get no leeway
	if _, err := openSession(t, short); !unauthorized(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	bad := proto(single)
	bad.Token = single.GetToken()[:len(single.GetToken())-4] + "AAAA"
	if _, err := openSession(t, bad); !unauthorized(err) {
		t.Fatalf("tampered token: %v", err)
	}
	bad.Token = "garbage"
	if _, err := openSession(t, bad); !unauthorized(err) {
		t.Fatalf("malformed token: %v", err)
	}
}

func proto(r *outpostv1.CreateSessionResponse) *outpostv1.CreateSessionResponse {
	return &outpostv1.CreateSessionResponse{ConnectUrl: r.GetConnectUrl(), GatewayCaSpkiSha256: r.GetGatewayCaSpkiSha256()}
}

func TestResolveTargetGRPCAndREST(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", []string{"10.10.0.0/16"}, []string{"contoso.test"})
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rr := outpostv1.NewRouteResolveServiceClient(gw.conn())

	cases := []struct {
		target, agent string
		want          outpostv1.Decision
		route         string
	}{
		{"10.10.3.4:22", "", outpostv1.Decision_DECISION_AGENT, "10.10.0.0/16"},
		{"db.contoso.test:5432", "", outpostv1.Decision_DECISION_AGENT, "contoso.test"},
		{"[2001:db8::1]:22", "", outpostv1.Decision_DECISION_REJECTED, ""}, // direct connections are off
		{"192.0.2.1:22", id, outpostv1.Decision_DECISION_AGENT, ""},
		{"192.0.2.1:22", "00000000-0000-4000-8000-000000000001", outpostv1.Decision_DECISION_REJECTED, ""},
	}
	for _, tc := range cases {
		resp, err := rr.ResolveTarget(ctx, &outpostv1.ResolveTargetRequest{Target: tc.target, AgentId: tc.agent})
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if resp.GetDecision() != tc.want || resp.GetReason() == "" ||
			tc.want == outpostv1.Decision_DECISION_AGENT && (len(resp.GetCandidates()) != 1 || resp.GetCandidates()[0].GetMatchedRoute() != tc.route) {
			t.Errorf("%s via %q: %v", tc.target, tc.agent, resp)
		}
	}
	if _, err := rr.ResolveTarget(ctx, &outpostv1.ResolveTargetRequest{Target: "no-port"}); err == nil || !strings.Contains(err.Error(), "target") {
		t.Fatalf("bad target: %v", err)
	}

	// REST, as curl users call it.
	code, body := gw.restPost("/v1/routes:resolve", `{"target":"10.10.3.4:22"}`)
	var out struct {
		Decision   string `json:"decision"`
		Reason     string `json:"reason"`
		Candidates []struct {
			Name string `json:"name"`
		} `json:"candidates"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Decision != "DECISION_AGENT" || len(out.Candidates) != 1 || out.Candidates[0].Name != "office" {
		t.Fatalf("REST resolve: %d %s", code, body)
	}
	t.Logf("REST: %s", out.Reason)
	if code, body := gw.restPost("/v1/routes:resolve", `{"target":"[::1"}`); code != 400 {
		t.Fatalf("REST bad target: %d %s", code, body)
	}
}

// restPost performs an authenticated REST POST with a JSON body.
func (gw *gateway) restPost(path, body string) (int, string) {
	gw.t.Helper()
	return gw.rest("POST", path, body)
}

// "outpost connect --stdio" as a subprocess carries bytes to a target.
func TestConnectStdioSubprocess(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: tcpServer(t, hasher)})

	const n = 1 << 20
	cmd := exec.Command(outpostBinary(t), "connect", "--gateway", gw.url, "--ca-pin", resp.GetGatewayCaSpkiSha256(),
		"--token", resp.GetToken(), "--stdio")
	cmd.Stdin = pattern(n)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, testlog.New(t)
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("outpost connect: %v", err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("outpost connect --stdio did not finish")
	}
	if !bytes.Equal(out.Bytes(), patternSum(n)) {
		t.Fatalf("stdout %x, want the digest of the %d bytes sent", out.Bytes(), n)
	}
}

// When the session fails, "outpost connect --stdio" prints the gateway's
// reason before it closes stdout: ssh, its parent as a ProxyCommand, exits
// and hangs up on it as soon as stdout closes. The test plays ssh: stdin
// stays open, and the process is killed the moment stdout ends.
func TestConnectStdioFailureReason(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	// The agent advertises loopback only: it refuses this target.
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: "10.0.0.9:22", AgentId: id})

	cmd := exec.Command(outpostBinary(t), "connect", "--gateway", gw.url, "--ca-pin", resp.GetGatewayCaSpkiSha256(),
		"--token", resp.GetToken(), "--stdio")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// A file, not a pipe: what the process wrote is there the moment it
	// returns from write(2).
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if n, _ := io.Copy(io.Discard, stdout); n != 0 {
		t.Errorf("%d bytes on stdout from a failed session", n)
	}
	cmd.Process.Kill() // what ssh's hangup does to a process that ignores nothing
	cmd.Wait()
	out, err := os.ReadFile(errFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	const want = "session failed: agent office refused connection: target 10.0.0.9:22 is not in advertised subnets"
	if c := strings.Count(string(out), want); c != 1 {
		t.Fatalf("stderr when stdout closed holds %q %d times, want once:\n%s", want, c, out)
	}
}

// An agent that never answers is given up on after the answer timeout, and
// the next candidate serves; the per-agent session limit refuses the excess.
func TestEntryTimeoutFailoverAndSessionLimit(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		c.AgentAnswerTimeout = server.Duration(500 * time.Millisecond)
		c.MaxSessionsPerAgent = 2
	})
	goodID := gw.onlineAgent("good")
	target := tcpServer(t, echo)

	dir, id := enrollAgent(t, gw, "silent", loopback, nil)
	conn := rawDial(t, gw, loadCert(t, dir))
	ctrl, _ := conn.OpenStream()
	dataplane.NewControlWriter(ctrl).Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1,
		Subnets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	// The silent agent accepts streams and never answers.
	go func() {
		for {
			if _, err := conn.AcceptStream(context.Background()); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	echoOnce(t, gw, target)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("served in %v: the silent agent was not tried first", d)
	}
	if _, err := gw.dial(id, target); !isAgentError(err, servertest.ErrAgentTimeout, "no ConnectResponse") {
		t.Fatalf("silent agent: %v", err)
	}

	a, err := gw.dial(goodID, target)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := gw.dial(goodID, target)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := gw.dial(goodID, target); !isAgentError(err, servertest.ErrAgentSessionLimit, "2 sessions") {
		t.Fatalf("third session with a limit of 2: %v", err)
	}
}

func loadCert(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs/agent.pem"), filepath.Join(dir, "certs/agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// IPv6 targets keep their brackets end to end, routed by an explicit agent;
// direct connections (off by default, IPv4 allow-lists only) never reach
// them.
func TestEntryIPv6Targets(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	gw := startGateway(t, t.TempDir(), nil)
	target := testtarget.Listen(t, "[::1]:0", echo).String() // [::1]:port
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "direct connections are disabled") {
		t.Fatalf("IPv6 direct: %q", reason)
	}

	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(gw.conn()).ResolveTarget(ctx, &outpostv1.ResolveTargetRequest{Target: target, AgentId: id})
	if err != nil || resp.GetDecision() != outpostv1.Decision_DECISION_AGENT {
		t.Fatalf("explicit agent for %s: %v %v", target, resp, err)
	}
	// The agent gets the bracketed target and refuses it on its own terms
	// (IPv6 loopback is never advertised by an IPv4 subnet).
	s, err = openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target, AgentId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, target) {
		t.Fatalf("reason %q does not name %s", reason, target)
	}
}
