// Package testtarget runs the TCP targets tests send sessions to: a loopback
// listener that serves each connection with a Handler until the test ends,
// and the usual handlers (echo, sink, source, hash). It is imported by tests
// only, and uses only the standard library.
package testtarget

import (
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// Handler serves one accepted connection; the connection is closed when it
// returns (or at test cleanup, whichever comes first).
type Handler func(c *net.TCPConn)

// Listen listens on addr, a loopback address and port ("127.0.0.1:0",
// "[::1]:0", or a fixed port), and runs h in its own goroutine for every
// connection it accepts. It returns the bound address. At cleanup it closes
// the listener and every connection still open, then waits for the accept
// loop and every handler, so no goroutine outlives the test. It fails the
// test if addr is not a loopback address or cannot be listened on.
func Listen(tb testing.TB, addr string, h Handler) netip.AddrPort {
	tb.Helper()
	if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsLoopback() {
		tb.Fatalf("testtarget: %q is not a loopback address and port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{} // open connections; guarded by mu
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				h(c.(*net.TCPConn))
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// ClosedAddr returns an address of 127.0.0.1 where nothing listens: a port
// that was bound and at once released, so a dial to it is refused (unless
// something else takes the port meanwhile, which the kernel makes unlikely).
func ClosedAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// Echo writes back everything it reads until the client's EOF, then
// half-closes.
func Echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

// Sink returns a handler that reads and discards everything until the
// client's EOF, adding the number of bytes to n (nil: only discards), then
// half-closes.
func Sink(n *atomic.Int64) Handler {
	return func(c *net.TCPConn) {
		read, err := io.Copy(io.Discard, c)
		if n != nil {
			n.Add(read)
		}
		if err == nil {
			_ = c.CloseWrite()
		}
	}
}

// Source returns a handler that writes the n bytes of Pattern(n), then
// half-closes and reads (and discards) until the client's EOF, so what the
// client sent never turns the close into a reset.
func Source(n int64) Handler {
	return func(c *net.TCPConn) {
		if _, err := io.Copy(c, Pattern(n)); err != nil {
			return
		}
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}
}

// Hash reads everything until the client's EOF, answers with its SHA-256
// (32 bytes), then half-closes.
func Hash(c *net.TCPConn) {
	h := sha256.New()
	if _, err := io.Copy(h, c); err != nil {
		return
	}
	if _, err := c.Write(h.Sum(nil)); err == nil {
		_ = c.CloseWrite()
	}
}

// HalfCloser is a byte stream that can end its sending side alone, as the
// client's side of a session can.
type HalfCloser interface {
	io.ReadWriter
	CloseWrite() error
}

// Exchange is a client's side of a session to Echo or Hash: it sends the n
// bytes of Pattern(n) on s and half-closes it while it reads what comes
// back, to the end. It returns what it read and the first error of either
// direction.
func Exchange(s HalfCloser, n int64) ([]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, Pattern(n))
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

// Pattern returns a reader of n deterministic bytes: the same n bytes on
// every call, not all alike, so a reordering or a dropped chunk changes
// their digest.
func Pattern(n int64) io.Reader {
	return io.LimitReader(&patternReader{}, n)
}

// PatternSum returns the SHA-256 of Pattern(n).
func PatternSum(n int64) []byte {
	h := sha256.New()
	_, _ = io.Copy(h, Pattern(n))
	return h.Sum(nil)
}

// patternReader is an endless Pattern; each byte is x·31+7 of the previous
// one, starting at 0.
type patternReader struct{ x byte }

func (p *patternReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.x
		p.x = p.x*31 + 7
	}
	return len(b), nil
}
