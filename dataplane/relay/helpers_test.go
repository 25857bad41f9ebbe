package relay

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testtls"
	"github.com/quic-go/quic-go"
)

// checkGoroutines records the goroutine count and, at cleanup, waits until it
// is back to that baseline. Call it first in a test so that it runs last.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	base := runtime.NumGoroutine()
	tb.Cleanup(func() {
		if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			tb.Errorf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
	})
}

// waitFor polls cond until it holds or d has passed, and reports whether it
// held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return dialTCP(tb, ln)
}

// dialTCP connects to ln and returns both ends.
func dialTCP(tb testing.TB, ln *net.TCPListener) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		d.Close()
		tb.Fatal(err)
	}
	return d, a
}

// testTLS returns a server config with a fresh self-signed ECDSA P-256
// certificate for 127.0.0.1 and a client config trusting it.
func testTLS(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	cert, roots := testtls.SelfSigned(tb, "relay test")
	server = transport.ServerTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	client = transport.ClientTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	return server, client
}

// quicStreamPair connects an "agent" to a "gateway" over QUIC on loopback
// (closed at cleanup) and returns a session stream as the gateway opened it
// and as the agent accepted it, after a one-byte handshake.
func quicStreamPair(tb testing.TB) (gateway, agent *quic.Stream) {
	tb.Helper()
	serverTLS, clientTLS := testTLS(tb)
	conf := transport.Config{}.QUIC()
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, conf)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan *quic.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	agentConn, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS, conf)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { agentConn.CloseWithError(0, "test done") })
	var gwConn *quic.Conn
	select {
	case gwConn = <-accepted:
	case err := <-acceptErr:
		tb.Fatal(err)
	}
	tb.Cleanup(func() { gwConn.CloseWithError(0, "test done") })

	gateway, err = gwConn.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := gateway.Write([]byte{'H'}); err != nil {
		tb.Fatal(err)
	}
	agent, err = agentConn.AcceptStream(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(agent, b[:]); err != nil {
		tb.Fatal(err)
	}
	return gateway, agent
}

// peer is an end of a session that the test drives directly.
type peer struct {
	io.ReadWriter
	closeWrite func() error
	// reset aborts the peer's connection or stream.
	reset func()
}

// result is what Relay returned.
type result struct {
	stats Stats
	err   error
}

// session is a running Relay between client and target.
type session struct {
	client, target peer
	finished       chan struct{} // closed when Relay returned
	res            result        // what it returned; read after finished
}

// wait returns Relay's result, failing the test if it takes over 10 s.
func (s *session) wait(tb testing.TB) result {
	tb.Helper()
	select {
	case <-s.finished:
		return s.res
	case <-time.After(10 * time.Second):
		tb.Fatal("Relay did not return")
		return result{}
	}
}

// Session kinds: which endpoints the relay sits between.
const (
	tcpToQUIC      = "tcp-quic"       // gateway: client TCP ↔ session stream
	tcpToTCP       = "tcp-tcp"        // both sides TCP
	tcpToQUICPlain = "tcp-quic-plain" // as tcpToQUIC, endpoints without ReadInterrupter
)

var sessionKinds = []string{tcpToQUIC, tcpToTCP, tcpToQUICPlain}

// plain hides every method but Endpoint's, ReadInterrupter included.
type plain struct{ Endpoint }

func tcpPeer(c *net.TCPConn) peer {
	return peer{
		ReadWriter: c,
		closeWrite: c.CloseWrite,
		reset: func() {
			c.SetLinger(0)
			c.Close()
		},
	}
}

// newSession starts Relay(ctx, a, b) where a is the server side of a TCP
// connection from client and b leads to target, per kind. Everything is
// closed at cleanup and Relay is waited for.
func newSession(tb testing.TB, ctx context.Context, kind string, opts Options) *session {
	tb.Helper()
	clientConn, gwConn := tcpPair(tb)
	tb.Cleanup(func() { clientConn.Close() })
	s := &session{client: tcpPeer(clientConn), finished: make(chan struct{})}
	var a, b Endpoint = TCPConn(gwConn), nil
	switch kind {
	case tcpToQUIC, tcpToQUICPlain:
		gwStream, agentStream := quicStreamPair(tb)
		b = StreamConn(gwStream)
		s.target = peer{
			ReadWriter: agentStream,
			closeWrite: agentStream.Close,
			reset: func() {
				agentStream.CancelRead(0x42)
				agentStream.CancelWrite(0x42)
			},
		}
		if kind == tcpToQUICPlain {
			a, b = plain{a}, plain{b}
		}
	case tcpToTCP:
		upstream, targetConn := tcpPair(tb)
		tb.Cleanup(func() { targetConn.Close() })
		b = TCPConn(upstream)
		s.target = tcpPeer(targetConn)
	default:
		tb.Fatalf("unknown session kind %q", kind)
	}
	go func() {
		st, err := Relay(ctx, a, b, opts)
		s.res = result{st, err}
		close(s.finished)
	}()
	tb.Cleanup(func() {
		// Make sure Relay is over before the goroutine check.
		s.client.reset()
		s.target.reset()
		select {
		case <-s.finished:
		case <-time.After(10 * time.Second):
			tb.Error("Relay still running at cleanup")
		}
	})
	return s
}
