package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// send writes n pseudo-random bytes from seed to w in chunks of random sizes
// (1 B to 64 KiB, so the relay sees both small and large reads), then calls
// closeWrite if it is not nil. It returns the SHA-256 of what it wrote.
func send(w io.Writer, closeWrite func() error, n int64, seed uint64) ([32]byte, error) {
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	sizes := rand.New(rand.NewPCG(seed, seed))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		chunk := buf[:min(int64(1+sizes.IntN(len(buf))), left)]
		_, _ = src.Read(chunk)
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return [32]byte{}, err
		}
		left -= int64(len(chunk))
	}
	if closeWrite != nil {
		if err := closeWrite(); err != nil {
			return [32]byte{}, err
		}
	}
	return [32]byte(h.Sum(nil)), nil
}

// receive reads r to EOF and returns the byte count and SHA-256.
func receive(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 64<<10))
	return n, [32]byte(h.Sum(nil)), err
}

// readAll reads r to the end and returns what it read; an error other than
// EOF is returned.
func readAll(r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	return string(b), err
}

func TestRoundTrip(t *testing.T) {
	for _, kind := range sessionKinds {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			var counters Counters
			s := newSession(t, context.Background(), kind, Options{Counters: &counters})

			if _, err := s.client.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(s.target, buf); err != nil || string(buf) != "hello" {
				t.Fatalf("target read %q: %v", buf, err)
			}
			if _, err := s.target.Write([]byte("world!")); err != nil {
				t.Fatal(err)
			}
			buf = make([]byte, 6)
			if _, err := io.ReadFull(s.client, buf); err != nil || string(buf) != "world!" {
				t.Fatalf("client read %q: %v", buf, err)
			}
			if err := s.client.closeWrite(); err != nil {
				t.Fatal(err)
			}
			if rest, err := readAll(s.target); err != nil || rest != "" {
				t.Fatalf("target after client's FIN: %q, %v", rest, err)
			}
			if err := s.target.closeWrite(); err != nil {
				t.Fatal(err)
			}
			if rest, err := readAll(s.client); err != nil || rest != "" {
				t.Fatalf("client after target's FIN: %q, %v", rest, err)
			}
			r := s.wait(t)
			if r.err != nil {
				t.Fatalf("Relay: %v", r.err)
			}
			if r.stats != (Stats{AToB: 5, BToA: 6}) {
				t.Fatalf("stats %+v", r.stats)
			}
			if counters.AToB() != 5 || counters.BToA() != 6 || counters.BuffersHeld() != 0 {
				t.Fatalf("counters %d/%d held %d", counters.AToB(), counters.BToA(), counters.BuffersHeld())
			}
		})
	}
}

// Both directions at once, checked end to end with SHA-256.
func TestBulk(t *testing.T) {
	for _, size := range []int64{1 << 20, 16 << 20} {
		for _, kind := range sessionKinds {
			t.Run(fmt.Sprintf("%s/%dMiB", kind, size>>20), func(t *testing.T) {
				checkGoroutines(t)
				var counters Counters
				s := newSession(t, context.Background(), kind, Options{Counters: &counters})

				type outcome struct {
					n   int64
					sum [32]byte
					err error
				}
				var wg sync.WaitGroup
				var up, down, upGot, downGot outcome
				wg.Go(func() { up.sum, up.err = send(s.client, s.client.closeWrite, size, 1) })
				wg.Go(func() { down.sum, down.err = send(s.target, s.target.closeWrite, size, 2) })
				wg.Go(func() { upGot.n, upGot.sum, upGot.err = receive(s.target) })
				wg.Go(func() { downGot.n, downGot.sum, downGot.err = receive(s.client) })
				wg.Wait()
				for name, err := range map[string]error{"send up": up.err, "send down": down.err, "receive up": upGot.err, "receive down": downGot.err} {
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
				if upGot.n != size || upGot.sum != up.sum {
					t.Errorf("client→target: %d bytes, hash match %v", upGot.n, upGot.sum == up.sum)
				}
				if downGot.n != size || downGot.sum != down.sum {
					t.Errorf("target→client: %d bytes, hash match %v", downGot.n, downGot.sum == down.sum)
				}
				r := s.wait(t)
				if r.err != nil {
					t.Fatalf("Relay: %v", r.err)
				}
				if r.stats != (Stats{AToB: size, BToA: size}) {
					t.Errorf("stats %+v", r.stats)
				}
				if counters.AToB() != size || counters.BToA() != size {
					t.Errorf("counters %d/%d", counters.AToB(), counters.BToA())
				}
				if counters.BuffersHeld() != 0 {
					t.Errorf("%d buffers still held after Relay returned", counters.BuffersHeld())
				}
			})
		}
	}
}

// One side closes its sending side; the other keeps sending 1 MiB, which
// all arrives; then both finish and Relay returns cleanly.
func TestHalfClose(t *testing.T) {
	const size = 1 << 20
	for _, kind := range sessionKinds {
		for _, clientFirst := range []bool{true, false} {
			name := kind + "/target-keeps-sending"
			if !clientFirst {
				name = kind + "/client-keeps-sending"
			}
			t.Run(name, func(t *testing.T) {
				checkGoroutines(t)
				s := newSession(t, context.Background(), kind, Options{})
				first, second := s.client, s.target
				if !clientFirst {
					first, second = s.target, s.client
				}
				if _, err := first.Write([]byte("request")); err != nil {
					t.Fatal(err)
				}
				if err := first.closeWrite(); err != nil {
					t.Fatal(err)
				}
				if got, err := readAll(second); err != nil || got != "request" {
					t.Fatalf("read %q, %v", got, err)
				}
				// The first side's FIN has arrived; the other direction
				// still flows.
				var wg sync.WaitGroup
				var sent [32]byte
				var sendErr error
				wg.Go(func() { sent, sendErr = send(second, second.closeWrite, size, 3) })
				n, got, err := receive(first)
				wg.Wait()
				if sendErr != nil || err != nil {
					t.Fatalf("send: %v, receive: %v", sendErr, err)
				}
				if n != size || got != sent {
					t.Fatalf("received %d bytes, hash match %v", n, got == sent)
				}
				r := s.wait(t)
				if r.err != nil {
					t.Fatalf("Relay: %v", r.err)
				}
				want := Stats{AToB: 7, BToA: size}
				if !clientFirst {
					want = Stats{AToB: size, BToA: 7}
				}
				if r.stats != want {
					t.Fatalf("stats %+v, want %+v", r.stats, want)
				}
			})
		}
	}
}

// isTCPResetOrEOF reports whether err, from reading a TCP connection to its
// end, is how the peer's abort shows: ECONNRESET, or a clean end (nil from
// io.Copy) when a FIN won the race.
func isTCPResetOrEOF(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || err == nil
}

// readUntilError reads r (bounded by 10 s when r is a net.Conn) and returns
// the error that ended it.
func readUntilError(r io.Reader) error {
	if c, ok := r.(net.Conn); ok {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

func TestResetFromClient(t *testing.T) {
	for _, kind := range sessionKinds {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			s := newSession(t, context.Background(), kind, Options{})
			// Traffic first, so the relay is in the middle of a session.
			if _, err := s.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(s.target, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			s.client.reset() // RST

			err := readUntilError(s.target)
			if kind == tcpToTCP {
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("target read: %v, want ECONNRESET", err)
				}
			} else {
				var serr *quic.StreamError
				if !errors.As(err, &serr) || serr.ErrorCode != ErrorCodeReset || !serr.Remote {
					t.Fatalf("target read: %v, want a remote stream reset with code %d", err, ErrorCodeReset)
				}
			}
			r := s.wait(t)
			var rerr *Error
			if !errors.As(r.err, &rerr) || rerr.Side != SideA || rerr.Op != "read" || !errors.Is(r.err, syscall.ECONNRESET) {
				t.Fatalf("Relay: %v, want a read error on a with ECONNRESET", r.err)
			}
		})
	}
}

func TestResetFromTarget(t *testing.T) {
	for _, kind := range sessionKinds {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			s := newSession(t, context.Background(), kind, Options{})
			if _, err := s.target.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(s.client, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			s.target.reset() // RST, or cancel both sides of the stream with 0x42

			err := readUntilError(s.client)
			if errors.Is(err, os.ErrDeadlineExceeded) || !isTCPResetOrEOF(err) {
				t.Fatalf("client read: %v, want ECONNRESET or EOF", err)
			}
			t.Logf("client saw %v after %v", err, time.Since(start))
			r := s.wait(t)
			var rerr *Error
			if !errors.As(r.err, &rerr) || rerr.Side != SideB {
				t.Fatalf("Relay: %v, want an error on b", r.err)
			}
			if kind == tcpToTCP {
				if !errors.Is(r.err, syscall.ECONNRESET) {
					t.Fatalf("Relay: %v, want ECONNRESET", r.err)
				}
				return
			}
			var serr *quic.StreamError
			if !errors.As(r.err, &serr) || serr.ErrorCode != 0x42 || !serr.Remote {
				t.Fatalf("Relay: %v, want the peer's stream error 0x42", r.err)
			}
		})
	}
}

// A write that fails (the target stopped reading with STOP_SENDING) aborts
// the relay too.
func TestWriteErrorAborts(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, context.Background(), tcpToQUIC, Options{})
	agent := s.target.ReadWriter.(*quic.Stream)
	agent.CancelRead(0x7) // the agent refuses further data
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() { _, sendErr = send(s.client, nil, 8<<20, 4) })
	r := s.wait(t)
	wg.Wait()
	var rerr *Error
	var serr *quic.StreamError
	if !errors.As(r.err, &rerr) || !errors.As(r.err, &serr) || serr.ErrorCode != 0x7 {
		t.Fatalf("Relay: %v, want an *Error wrapping stream error 7", r.err)
	}
	// Depending on timing, the agent's STOP_SENDING shows when the relay
	// writes, or as a reset of the stream's other half when it reads.
	t.Logf("Relay: %v (side %v op %q)", r.err, rerr.Side, rerr.Op)
	if sendErr == nil {
		t.Log("client finished writing before the reset (data fit in buffers)")
	}
}

func TestContextCancel(t *testing.T) {
	errShutdown := errors.New("shutdown")
	for _, kind := range sessionKinds {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			s := newSession(t, ctx, kind, Options{})
			if _, err := s.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(s.target, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			cancel(errShutdown)
			r := s.wait(t)
			if !errors.Is(r.err, errShutdown) {
				t.Fatalf("Relay: %v, want the cancel cause", r.err)
			}
			if err := readUntilError(s.client); errors.Is(err, os.ErrDeadlineExceeded) || !isTCPResetOrEOF(err) {
				t.Fatalf("client read: %v", err)
			}
			err := readUntilError(s.target)
			if kind == tcpToTCP {
				if !isTCPResetOrEOF(err) || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("target read: %v", err)
				}
				return
			}
			var serr *quic.StreamError
			if !errors.As(err, &serr) || serr.ErrorCode != ErrorCodeCanceled {
				t.Fatalf("target read: %v, want stream error %d", err, ErrorCodeCanceled)
			}
		})
	}
}

// Cancelling while data flows both ways stops both directions.
func TestContextCancelDuringTransfer(t *testing.T) {
	for _, kind := range sessionKinds {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var counters Counters
			s := newSession(t, ctx, kind, Options{Counters: &counters})
			var wg sync.WaitGroup
			// Endless senders and receivers; they stop on the errors the
			// cancellation causes.
			wg.Go(func() { send(s.client, nil, 1<<40, 5) })
			wg.Go(func() { send(s.target, nil, 1<<40, 6) })
			wg.Go(func() { receive(s.client) })
			wg.Go(func() { receive(s.target) })
			if !waitFor(10*time.Second, func() bool { return counters.AToB() > 1<<20 && counters.BToA() > 1<<20 }) {
				t.Fatalf("no progress: %d/%d", counters.AToB(), counters.BToA())
			}
			cancel()
			r := s.wait(t)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Relay: %v", r.err)
			}
			if r.stats.AToB != counters.AToB() || r.stats.BToA != counters.BToA() {
				t.Errorf("stats %+v, counters %d/%d", r.stats, counters.AToB(), counters.BToA())
			}
			// The senders and receivers all end because the relay reset
			// both sides.
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("peers still transferring after the relay was cancelled")
			}
		})
	}
}

func TestAlreadyCancelled(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := newSession(t, ctx, tcpToQUIC, Options{})
	if r := s.wait(t); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Relay: %v", r.err)
	}
}

// After a burst, the pooled buffers go back once the flow pauses, while the
// session stays open and usable.
func TestBuffersReleasedOnPause(t *testing.T) {
	for _, kind := range []string{tcpToQUIC, tcpToTCP} {
		t.Run(kind, func(t *testing.T) {
			checkGoroutines(t)
			var counters Counters
			s := newSession(t, context.Background(), kind, Options{Counters: &counters, PauseTimeout: 20 * time.Millisecond})
			for round := range 3 {
				var wg sync.WaitGroup
				var sendErr error
				var peak int64
				wg.Go(func() { _, sendErr = send(s.client, nil, 1<<20, uint64(round)) })
				buf := make([]byte, 1<<20)
				_, err := io.ReadFull(s.target, buf)
				peak = max(peak, counters.BuffersHeld())
				wg.Wait()
				if err != nil || sendErr != nil {
					t.Fatalf("round %d: %v %v", round, err, sendErr)
				}
				if !waitFor(5*time.Second, func() bool { return counters.BuffersHeld() == 0 }) {
					t.Fatalf("round %d: %d buffers still held after the pause", round, counters.BuffersHeld())
				}
				t.Logf("round %d: buffers held right after the burst: %d, then 0", round, peak)
			}
			s.client.closeWrite()
			s.target.closeWrite()
			if r := s.wait(t); r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	err := &Error{Side: SideB, Op: "write", Err: io.ErrClosedPipe}
	if got := err.Error(); got != "relay: write b: io: read/write on closed pipe" {
		t.Fatalf("Error() = %q", got)
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal("Unwrap")
	}
	if SideA.String() != "a" {
		t.Fatal("SideA")
	}
}

var (
	_ Endpoint        = (*TCPEndpoint)(nil)
	_ ReadInterrupter = (*TCPEndpoint)(nil)
	_ Endpoint        = (*StreamEndpoint)(nil)
	_ ReadInterrupter = (*StreamEndpoint)(nil)
	_ ReadWaiter      = (*TCPEndpoint)(nil)
	_ ReadWaiter      = (*StreamEndpoint)(nil)
)

// A TCP endpoint's WaitRead returns once data is there, without reading
// it; a read deadline and Abort end a wait with nothing to read.
func TestTCPWaitRead(t *testing.T) {
	if !tcpWaits {
		t.Skip("no WaitRead on this platform")
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, c := dialTCP(t, ln)
	defer peer.Close()
	e := TCPConn(c)

	waited := make(chan error, 1)
	go func() { waited <- e.WaitRead() }()
	select {
	case err := <-waited:
		t.Fatalf("WaitRead returned %v with nothing to read", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := peer.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitRead: %v", err)
	}
	buf := make([]byte, 4)
	if n, err := e.Read(buf); err != nil || string(buf[:n]) != "ab" {
		t.Fatalf("the read after WaitRead got %q, %v", buf[:n], err)
	}

	// A reset the peek finds is the next Read's error, not an EOF.
	peer2, c2 := dialTCP(t, ln)
	e2 := TCPConn(c2)
	defer e2.Close()
	peer2.SetLinger(0)
	peer2.Close()
	if err := e2.WaitRead(); err != nil {
		t.Fatalf("WaitRead on a reset connection: %v", err)
	}
	if _, err := e2.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the read after WaitRead on a reset connection: %v, want ECONNRESET", err)
	}

	e.SetReadInterrupt(time.Now().Add(20 * time.Millisecond))
	if err := e.WaitRead(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitRead past the deadline: %v", err)
	}
	e.SetReadInterrupt(time.Time{})

	go func() { waited <- e.WaitRead() }()
	e.Abort(ErrorCodeReset)
	select {
	case err := <-waited:
		if err == nil {
			t.Fatal("WaitRead after Abort returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not end WaitRead")
	}
}
