package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtls"
)

// fakeGateway is an entry on loopback that echoes every session, on
// standing connections or WebSockets, and that a test can refuse, cut or
// stop and restart on the same address.
type fakeGateway struct {
	t     *testing.T
	cert  tls.Certificate
	caPEM []byte
	addr  string

	status    atomic.Int32 // when not 0, the status answered to every request
	noMux     atomic.Bool  // answer standing connections as a gateway without them
	upgrades  atomic.Int32 // standing connections made
	maxStream int          // the cap announced; 0: the default
	// endDelay is how long a session that ended waits before its stream is
	// closed; lostFirst counts those whose connection ended meanwhile,
	// ended those that finished.
	endDelay         time.Duration
	lostFirst, ended atomic.Int32
	// cutAfter, while positive, is how many of the next sessions cut their
	// whole connection after reading the session's first bytes, answering
	// nothing (a replica killed during the session's setup); greet makes
	// each session send "hi" before it echoes.
	cutAfter atomic.Int32
	greet    bool

	mu    sync.Mutex
	srv   *http.Server
	ln    net.Listener
	conns map[net.Conn]struct{} // hijacked connections; guarded by mu
	sess  []*yamux.Session      // their yamux sessions; guarded by mu
	wg    sync.WaitGroup        // their goroutines
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	ca, cert := testtls.Chain(t, "gateway")
	g := &fakeGateway{t: t, cert: cert, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		conns: map[net.Conn]struct{}{}}
	g.start("127.0.0.1:0")
	t.Cleanup(g.stop)
	return g
}

func (g *fakeGateway) start(addr string) {
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{g.cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		g.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(g.serve)}
	g.mu.Lock()
	g.srv, g.ln, g.addr = srv, ln, ln.Addr().String()
	g.mu.Unlock()
	g.wg.Go(func() { srv.Serve(ln) })
}

// stop closes the listener and every connection, and waits for them.
func (g *fakeGateway) stop() {
	g.mu.Lock()
	srv := g.srv
	g.mu.Unlock()
	srv.Close()
	g.cut()
	g.wg.Wait()
}

// cut closes every standing connection.
func (g *fakeGateway) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
	}
}

// goAway tells every standing connection to take no more sessions.
func (g *fakeGateway) goAway() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sess {
		s.GoAway()
	}
}

func (g *fakeGateway) url() string { return "https://" + g.addr }

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	if st := g.status.Load(); st != 0 {
		http.Error(w, "refused by the test", int(st))
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), muxstream.UpgradeToken) {
		g.serveWebSocket(w, r)
		return
	}
	if g.noMux.Load() {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "needs a WebSocket handshake", http.StatusUpgradeRequired)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		g.t.Error(err)
		return
	}
	g.upgrades.Add(1)
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n", muxstream.UpgradeToken)
	if g.maxStream > 0 {
		fmt.Fprintf(brw, "%s: %d\r\n", muxstream.MaxStreamsHeader, g.maxStream)
	}
	brw.WriteString("\r\n")
	brw.Flush()
	sess, err := yamux.Server(muxstream.Conn{Reader: brw.Reader, WriteCloser: c}, muxstream.Config(0, nil))
	if err != nil {
		g.t.Error(err)
		return
	}
	g.mu.Lock()
	g.conns[c] = struct{}{}
	g.sess = append(g.sess, sess)
	g.mu.Unlock()
	g.wg.Go(func() {
		defer func() {
			sess.Close()
			g.mu.Lock()
			delete(g.conns, c)
			g.mu.Unlock()
		}()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			g.wg.Go(func() {
				defer g.ended.Add(1)
				s := muxstream.New(st)
				if g.greet {
					if _, err := s.Write([]byte("hi")); err != nil {
						s.Abort(1)
						return
					}
				}
				if g.cutAfter.Add(-1) >= 0 {
					s.Read(make([]byte, 64))
					c.Close()
					return
				}
				_, err := io.Copy(s, s)
				if g.endDelay > 0 {
					time.Sleep(g.endDelay)
					if sess.IsClosed() {
						g.lostFirst.Add(1)
					}
				}
				if err != nil {
					s.Abort(1)
					return
				}
				s.CloseWrite()
				s.Close()
			})
		}
	})
}

func (g *fakeGateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	s := wsstream.New(context.Background(), ws)
	if _, err := io.Copy(s, s); err != nil {
		s.Abort(1)
		return
	}
	s.CloseWrite()
	s.Close()
}

// newTestClient returns a client of g, closed at cleanup.
func newTestClient(t *testing.T, g *fakeGateway, mutate func(*Config)) *Client {
	t.Helper()
	cfg := Config{Gateway: g.url(), Token: "a.eyJyZXVzYWJsZSI6dHJ1ZX0.c", CAPEM: g.caPEM, Logger: testlog.Logger(t, "connect")}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg on a new session of c, half-closes, and returns what came
// back.
func echo(t *testing.T, c *Client, msg string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Open(ctx)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if _, err := s.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := s.CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(s)
	return string(b), err
}

// Many sessions, one after the other and at once, share one connection:
// one TLS handshake for all.
func TestStandingConnectionShared(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g, nil)
	if c.SingleUse() {
		t.Fatal("the test token is not reusable")
	}
	for i := range 5 {
		if got, err := echo(t, c, fmt.Sprint("seq ", i)); err != nil || got != fmt.Sprint("seq ", i) {
			t.Fatalf("session %d: %q %v", i, got, err)
		}
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			msg := strings.Repeat(fmt.Sprint(i), 100_000)
			if got, err := echo(t, c, msg); err != nil || got != msg {
				t.Errorf("parallel session %d: %d bytes, %v", i, len(got), err)
			}
		})
	}
	wg.Wait()
	if n := g.upgrades.Load(); n != 1 {
		t.Errorf("%d standing connections, want 1", n)
	}
}

// A lost connection fails its sessions cleanly; sessions opened while it
// is down wait for the reconnection, and those that wait too long fail
// with the reason.
func TestStandingReconnect(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g, func(c *Config) { c.ConnectWait = 30 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("in flight")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}

	// The gateway goes away, and stays away for a while.
	addr := g.addr
	g.stop()
	if _, err := io.ReadAll(s); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Fatalf("session on the lost connection: %v", err)
	}
	s.Abort(1)
	waiting := make(chan error, 1)
	go func() {
		got, err := echo(t, c, "after the outage")
		if err == nil && got != "after the outage" {
			err = fmt.Errorf("echo %q", got)
		}
		waiting <- err
	}()
	select {
	case err := <-waiting:
		t.Fatalf("a session during the outage returned: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	g.start(addr)
	select {
	case err := <-waiting:
		if err != nil {
			t.Fatalf("session after the reconnection: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reconnection")
	}

	// A session that waits longer than ConnectWait fails with the reason.
	short := newTestClient(t, g, func(c *Config) { c.ConnectWait = 200 * time.Millisecond })
	g.stop()
	start := time.Now()
	_, err = short.Open(ctx)
	if err == nil || !strings.Contains(err.Error(), "no connection to the gateway") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Open while the gateway is down: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open waited %v with a ConnectWait of 200 ms", d)
	}
	g.start(addr)
}

// A connection cut under live sessions: they fail, new ones succeed.
func TestStandingCut(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	g.cut()
	if _, err := io.ReadAll(s); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Fatalf("session on the cut connection: %v", err)
	}
	s.Abort(1)
	if got, err := echo(t, c, "again"); err != nil || got != "again" {
		t.Fatalf("after the cut: %q %v", got, err)
	}
	if n := g.upgrades.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A gateway that stops taking sessions on a connection (GoAway) gets the
// next session on a new one; the live one goes on.
func TestStandingGoAway(t *testing.T) {
	g := newFakeGateway(t)
	c := newTestClient(t, g, nil)
	live, err := c.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The session is up at the gateway before it says GoAway.
	if _, err := live.Write([]byte("up")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(live, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	g.goAway()
	// A session opened before the client read the GoAway is reset by the
	// gateway's yamux; the one after it goes on a new connection.
	got, err := echo(t, c, "elsewhere")
	if errors.Is(err, syscall.ECONNRESET) {
		got, err = echo(t, c, "elsewhere")
	}
	if err != nil || got != "elsewhere" {
		t.Fatalf("after GoAway: %q %v", got, err)
	}
	if n := g.upgrades.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if _, err := live.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	live.CloseWrite()
	if b, err := io.ReadAll(live); err != nil || string(b) != "still" {
		t.Fatalf("the session on the retired connection: %q %v", b, err)
	}
	live.Close()
}

// A refusal no retry fixes fails every session at once with the gateway's
// reason, and the client stops trying.
func TestStandingRefused(t *testing.T) {
	g := newFakeGateway(t)
	g.status.Store(http.StatusUnauthorized)
	c := newTestClient(t, g, nil)
	for range 3 {
		_, err := echo(t, c, "x")
		var re *RefusedError
		if !errors.As(err, &re) || re.Status != 401 || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "refused by the test") {
			t.Fatalf("refused connection: %v", err)
		}
	}
	if n := g.upgrades.Load(); n != 0 {
		t.Errorf("%d connections", n)
	}
}

// A gateway without standing connections gets a WebSocket per session.
func TestStandingFallsBackToWebSockets(t *testing.T) {
	g := newFakeGateway(t)
	g.noMux.Store(true)
	c := newTestClient(t, g, nil)
	for i := range 3 {
		if got, err := echo(t, c, "over a websocket"); err != nil || got != "over a websocket" {
			t.Fatalf("session %d: %q %v", i, got, err)
		}
	}
	ws := newTestClient(t, g, func(c *Config) { c.WebSocket = true })
	g.noMux.Store(false)
	if got, err := echo(t, ws, "asked for"); err != nil || got != "asked for" || g.upgrades.Load() != 0 {
		t.Fatalf("Config.WebSocket: %q %v, %d standing connections", got, err, g.upgrades.Load())
	}
}

// Sessions beyond the gateway's cap wait for a free slot, and fail with the
// reason if none frees in time.
func TestStandingCap(t *testing.T) {
	g := newFakeGateway(t)
	g.maxStream = 2
	c := newTestClient(t, g, func(c *Config) { c.ConnectWait = 300 * time.Millisecond })
	ctx := context.Background()
	a, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx); err == nil || !strings.Contains(err.Error(), "maximum of 2 sessions") {
		t.Fatalf("a third session: %v", err)
	}
	a.Close()
	if got, err := echo(t, c, "freed"); err != nil || got != "freed" {
		t.Fatalf("after a session ended: %q %v", got, err)
	}
	b.Abort(1)
}

// Bridge tells OnFailure why the gateway refused, before it closes the
// local side: ssh prints it only while it still reads.
func TestBridgeReportsRefusalFirst(t *testing.T) {
	g := newFakeGateway(t)
	g.status.Store(http.StatusUnauthorized)
	var events []string
	var mu sync.Mutex
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	c := newTestClient(t, g, func(c *Config) { c.OnFailure = func(r string) { note("reason: " + r) } })
	local := &recordingEndpoint{note: note}
	if err := c.Bridge(context.Background(), local); err == nil {
		t.Fatal("Bridge succeeded against a refusing gateway")
	}
	if len(events) != 2 || !strings.HasPrefix(events[0], "reason: gateway refused the session (HTTP 401)") || events[1] != "local closed" {
		t.Fatalf("events %q", events)
	}
}

// recordingEndpoint is a local side that notes when it is closed.
type recordingEndpoint struct {
	bytes.Buffer
	note func(string)
}

func (e *recordingEndpoint) CloseWrite() error { e.note("local closed"); return nil }
func (e *recordingEndpoint) Abort(uint64)      { e.note("local closed") }
func (e *recordingEndpoint) Close() error      { return nil }

// A client that closes right after it aborted a session (its local
// connection was reset, and the token was good for that one session) lets
// the gateway finish that session before the connection ends, so that the
// gateway records the reset rather than a lost connection.
func TestStandingCloseLetsTheGatewayFinish(t *testing.T) {
	g := newFakeGateway(t)
	g.endDelay = 200 * time.Millisecond
	c := newTestClient(t, g, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	s.Abort(1)
	start := time.Now()
	c.Close()
	closed := time.Since(start)
	for deadline := time.Now().Add(5 * time.Second); g.ended.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if g.ended.Load() != 1 || g.lostFirst.Load() != 0 {
		t.Errorf("after Close: %d sessions ended at the gateway, %d of them after the connection was lost; want 1 and 0",
			g.ended.Load(), g.lostFirst.Load())
	}
	if closed > 1500*time.Millisecond {
		t.Errorf("Close took %v", closed)
	}
}

// bridgeEcho bridges a local TCP connection through c, sends msg and
// half-closes, and returns what came back and Bridge's result.
func bridgeEcho(t *testing.T, c *Client, msg string) (string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bridged := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			bridged <- err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bridged <- c.Bridge(ctx, relay.TCPConn(conn.(*net.TCPConn)))
	}()
	local, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	local.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := local.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	local.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(local)
	return string(got), <-bridged
}

// A standing connection lost while a session opens (the replica that held
// it died before answering) costs the local program nothing with
// ReplayOnLoss: the session is opened again on the next connection with
// the bytes already sent; without it, a session that sent bytes fails. Once
// the gateway has answered, a loss fails the session as before; so it does
// for a single-use token, which the first attempt spent.
func TestBridgeSurvivesALossDuringSetup(t *testing.T) {
	g := newFakeGateway(t)
	plain := newTestClient(t, g, nil)
	g.cutAfter.Store(1)
	if _, err := bridgeEcho(t, plain, "hello"); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Errorf("without ReplayOnLoss, a session that sent bytes: %v; want the loss", err)
	}
	plain.Close() // its reconnection counts no more
	c := newTestClient(t, g, func(c *Config) { c.ReplayOnLoss = true })
	before := g.upgrades.Load()
	g.cutAfter.Store(1)
	if got, err := bridgeEcho(t, c, "hello"); err != nil || got != "hello" {
		t.Fatalf("session through a lost connection: %q, %v", got, err)
	}
	if n := g.upgrades.Load() - before; n != 2 {
		t.Errorf("%d standing connections, want 2", n)
	}

	g.greet = true
	g.cutAfter.Store(1)
	if got, err := bridgeEcho(t, c, "hello"); !errors.Is(err, muxstream.ErrConnectionLost) || got != "hi" {
		t.Errorf("a loss after the gateway answered: %q, %v; want hi and the loss", got, err)
	}

	single := newTestClient(t, g, func(c *Config) { c.Token, c.ReplayOnLoss = "a.eyJyZXVzYWJsZSI6ZmFsc2V9.c", true })
	g.greet = false
	g.cutAfter.Store(1)
	if _, err := bridgeEcho(t, single, "hello"); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Errorf("single-use token: %v; want the loss", err)
	}
}
