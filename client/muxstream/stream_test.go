package muxstream

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// sessions connects a yamux client and server over loopback TCP; both are
// closed at cleanup.
func sessions(t *testing.T) (client, server *yamux.Session) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	logf := func(msg string) { t.Log(msg) }
	client, err = yamux.Client(cc, Config(0, logf))
	if err != nil {
		t.Fatal(err)
	}
	server, err = yamux.Server(guarded(sc), Config(0, logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// guarded hands c to yamux through a Guard, as the gateway does.
func guarded(c net.Conn) Conn {
	return Conn{Reader: NewGuard(c, nil), WriteCloser: c}
}

// pair opens a stream on client and accepts it on server.
func pair(t *testing.T, client, server *yamux.Session) (c, s *Stream) {
	t.Helper()
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	c, s = New(cs), New(ss)
	t.Cleanup(func() {
		c.Abort(0)
		s.Abort(0)
	})
	return c, s
}

// result is what a goroutine of a test returns.
type result struct {
	b   []byte
	err error
}

// within waits for ch or fails the test after 10 s.
func within[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

func goRead(r io.Reader) <-chan result {
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		ch <- result{b, err}
	}()
	return ch
}

// Bytes flow both ways; each direction ends on its own (half-close), and
// the stream leaves both sessions once both sides closed it.
func TestStreamHalfClose(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	up := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB: several windows
	got := goRead(s)
	go func() {
		c.Write(up)
		c.CloseWrite()
	}()
	r := within(t, got)
	if r.err != nil || !bytes.Equal(r.b, up) || !s.ReadClosed() {
		t.Fatalf("server read %d bytes, %v", len(r.b), r.err)
	}
	// The client's direction is over; the server's still flows.
	sum := sha256.Sum256(up)
	down := goRead(c)
	if _, err := s.Write(sum[:]); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := within(t, down); r.err != nil || !bytes.Equal(r.b, sum[:]) {
		t.Fatalf("client read %x, %v", r.b, r.err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 })
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

// writeUntilError writes on s until a write fails, and sends the error.
func writeUntilError(s *Stream) <-chan error {
	wrote := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Write(make([]byte, 32<<10)); err != nil {
				wrote <- err
				return
			}
		}
	}()
	return wrote
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		<-tick.C
	}
}

// Fail carries its reason to the peer, which reads it as a failure.
func TestStreamFail(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	s.Fail("agent office refused connection")
	r := within(t, goRead(c))
	if reason, ok := Failure(r.err); !ok || reason != "agent office refused connection" {
		t.Fatalf("client read %q, %v", r.b, r.err)
	}
	if errors.Is(r.err, syscall.ECONNRESET) {
		t.Error("a failure with a reason reads as a reset")
	}
}

// Abort resets the peer (its reads fail like a TCP reset), unblocks a
// write waiting for room, and leaves other streams alone.
func TestStreamAbort(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	other, otherS := pair(t, client, server)

	// The server never reads: the client's write fills the window and waits.
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 4*StreamWindow))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a write of four windows returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Abort(0x1)
	if err := within(t, wrote); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("pending write after Abort: %v", err)
	}
	r := within(t, goRead(s))
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Fatalf("server read after the client's abort: %v", r.err)
	}
	if len(r.b) == 0 {
		t.Error("the data sent before the abort was lost")
	}

	// The other stream still works.
	go func() {
		other.Write([]byte("still here"))
		other.CloseWrite()
	}()
	if r := within(t, goRead(otherS)); r.err != nil || string(r.b) != "still here" {
		t.Fatalf("other stream: %q %v", r.b, r.err)
	}
}

// A RESET after this side read the peer's END still stops this side's
// writes: the watcher sees it.
func TestStreamResetAfterEnd(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := within(t, goRead(s)); r.err != nil || len(r.b) != 0 {
		t.Fatalf("server read %q %v", r.b, r.err)
	}
	// The server writes on; the client aborts without reading.
	wrote := writeUntilError(s)
	c.Abort(0x2)
	err := within(t, wrote)
	var re *ResetError
	if !errors.As(err, &re) || re.Kind != ResetCanceled {
		t.Fatalf("server write after the client's abort: %v", err)
	}
	if err := s.CloseWrite(); !errors.As(err, &re) {
		t.Fatalf("CloseWrite after the peer's reset: %v", err)
	}
}

// A peer that closes the whole session while this side still sends: this
// side's reads end cleanly, its writes fail with ErrPeerClosed, and
// CloseWrite has nothing to do.
func TestStreamPeerClosed(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	if err := c.Close(); err != nil { // END and FIN, without reading
		t.Fatal(err)
	}
	if r := within(t, goRead(s)); r.err != nil {
		t.Fatalf("server read: %v", r.err)
	}
	wrote := writeUntilError(s)
	if err := within(t, wrote); !errors.Is(err, ErrPeerClosed) || !s.PeerClosed() {
		t.Fatalf("server write after the client closed: %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite after the peer closed: %v", err)
	}

	// A FIN without END reads the same way.
	c2, s2 := pair(t, client, server)
	c2.st.Close()
	if r := within(t, goRead(s2)); r.err != nil {
		t.Fatalf("read after a bare FIN: %v", r.err)
	}
	if !s2.PeerClosed() {
		t.Error("a bare FIN is not a close")
	}
}

// When the connection goes, every stream's reads and writes fail with
// ErrConnectionLost.
func TestStreamConnectionLost(t *testing.T) {
	client, server := sessions(t)
	c, s := pair(t, client, server)
	got := goRead(s)
	if _, err := c.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	client.Close()
	r := within(t, got)
	if !errors.Is(r.err, ErrConnectionLost) || string(r.b) != "partial" {
		t.Fatalf("server read %q, %v", r.b, r.err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("client write on a closed connection: %v", err)
	}
	if r := within(t, goRead(c)); !errors.Is(r.err, ErrConnectionLost) {
		t.Fatalf("client read on a closed connection: %v", r.err)
	}
}
