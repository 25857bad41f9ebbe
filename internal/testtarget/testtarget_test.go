package testtarget

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dial connects to addr with a deadline on everything that follows.
func dial(t *testing.T, addr fmt.Stringer) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// send writes p, half-closes and returns everything the target answers up
// to its EOF.
func send(t *testing.T, c *net.TCPConn, p []byte) []byte {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until EOF: %v", err)
	}
	return got
}

func TestEcho(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if addr == "[::1]:0" {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			ap := Listen(t, addr, Echo)
			if !ap.Addr().IsLoopback() || ap.Port() == 0 {
				t.Fatalf("bound address %v", ap)
			}
			msg := bytes.Repeat([]byte("echo "), 10000)
			if got := send(t, dial(t, ap), msg); !bytes.Equal(got, msg) {
				t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(msg))
			}
		})
	}
}

func TestSink(t *testing.T) {
	var n atomic.Int64
	addr := Listen(t, "127.0.0.1:0", Sink(&n))
	if got := send(t, dial(t, addr), make([]byte, 100000)); len(got) != 0 {
		t.Fatalf("the sink answered %d bytes", len(got))
	}
	// The sink counts before it half-closes, and the client saw the EOF.
	if n.Load() != 100000 {
		t.Fatalf("counted %d bytes, want 100000", n.Load())
	}
	if got := send(t, dial(t, Listen(t, "127.0.0.1:0", Sink(nil))), []byte("x")); len(got) != 0 {
		t.Fatalf("the uncounted sink answered %d bytes", len(got))
	}
}

func TestSourceAndPattern(t *testing.T) {
	const n = 300000
	addr := Listen(t, "127.0.0.1:0", Source(n))
	c := dial(t, addr)
	// What the client sends is read, not answered with a reset.
	got := send(t, c, []byte("ignored"))
	want, _ := io.ReadAll(Pattern(n))
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, not the %d of Pattern(%d)", len(got), len(want), n)
	}
	again, _ := io.ReadAll(Pattern(n))
	if !bytes.Equal(again, want) {
		t.Fatal("Pattern is not deterministic")
	}
	if bytes.Count(want, want[:1]) == len(want) {
		t.Fatal("Pattern is one byte repeated")
	}
	if s := sha256.Sum256(want); !bytes.Equal(PatternSum(n), s[:]) {
		t.Fatal("PatternSum is not the SHA-256 of Pattern")
	}
}

func TestHash(t *testing.T) {
	addr := Listen(t, "127.0.0.1:0", Hash)
	msg, _ := io.ReadAll(Pattern(123456))
	if got := send(t, dial(t, addr), msg); !bytes.Equal(got, PatternSum(123456)) {
		t.Fatalf("answered %x, want the SHA-256 of what was sent", got)
	}
}

// At cleanup the listener and every open connection close, and every
// handler has returned.
func TestListenCleanup(t *testing.T) {
	var (
		addr     fmt.Stringer
		returned atomic.Bool
		client   *net.TCPConn
	)
	t.Run("inner", func(t *testing.T) {
		started := make(chan struct{})
		ap := Listen(t, "127.0.0.1:0", func(c *net.TCPConn) {
			close(started)
			_, _ = io.Copy(io.Discard, c) // until the cleanup closes c
			returned.Store(true)
		})
		addr = ap
		c, err := net.Dial("tcp", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		client = c.(*net.TCPConn)
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler did not start")
		}
	})
	defer client.Close()
	if !returned.Load() {
		t.Fatal("the handler was still running after cleanup")
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read on the client after cleanup: %d, %v; want the connection closed", n, err)
	}
	if c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after cleanup")
	}
}

func TestClosedAddr(t *testing.T) {
	ap := ClosedAddr(t)
	if ap.Addr().String() != "127.0.0.1" || ap.Port() == 0 {
		t.Fatalf("ClosedAddr = %v", ap)
	}
	c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want connection refused", err)
	}
}

// fatalRecorder is a testing.TB whose Fatal and Fatalf record the message
// and end the calling goroutine, as the real ones do.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Listen refuses anything but a loopback address: tests send no traffic
// elsewhere.
func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "localhost:0", "192.0.2.1:0"} {
		r := &fatalRecorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Listen(r, addr, Echo)
		}()
		<-done
		if r.msg == "" {
			t.Errorf("Listen(%q) did not fail the test", addr)
		}
	}
}
