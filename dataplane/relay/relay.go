// Package relay copies a session's bytes both ways between two endpoints
// once its handshake is done: the agent relays a QUIC stream to its target's
// TCP connection, the gateway relays a client's connection (TCP or
// WebSocket) to a QUIC stream.
//
// End of data in one direction becomes a half-close of the other endpoint
// (TCP CloseWrite, QUIC stream Close of the send side) while the other
// direction keeps flowing; an error on either side aborts both (TCP RST,
// QUIC CancelRead+CancelWrite with an application error code), and so does
// cancelling the context.
//
// Memory: each direction borrows a pooled 32 KiB buffer only while data
// flows, returning it after a pause (see Options.PauseTimeout), so an idle
// session does not pin 64 KiB. While it waits for data, a direction whose
// source can wait without reading (ReadWaiter: TCP, a QUIC stream, a
// standing connection's stream) holds no buffer at all; the others wait
// with a 2 KiB one.
package relay

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrorCode is an application error code Relay aborts an endpoint with; a
// QUIC endpoint puts it on the wire (the peer sees it in
// quic.StreamError.ErrorCode). It is a plain uint64 so that endpoints
// outside dataplane (the client's WebSocket stream) implement Endpoint
// without importing quic-go.
type ErrorCode = uint64

// The error codes. They are untyped so that they convert to
// quic.StreamErrorCode where a stream is cancelled directly, and they are on
// the wire: keep them stable.
const (
	// ErrorCodeNoError closes the receive side of a stream whose relay ended
	// normally (STOP_SENDING after the data was read, usually not sent).
	ErrorCodeNoError = 0x0
	// ErrorCodeReset: the other side of the relay failed (connection reset,
	// I/O error, refused write), so this one is reset too.
	ErrorCodeReset = 0x1
	// ErrorCodeCanceled: the relay was cancelled locally (its context ended:
	// shutdown, agent deleted, session killed).
	ErrorCodeCanceled = 0x2
)

const (
	// bufferSize is the size of the pooled copy buffer (DESIGN.md §12).
	bufferSize = 32 << 10
	// smallBufferSize is the per-direction buffer used while waiting for
	// data. It holds one full-size TCP segment, so interactive traffic
	// (keystrokes, prompts) never needs a pooled buffer.
	smallBufferSize = 2 << 10
	// DefaultPauseTimeout is Options.PauseTimeout's default.
	DefaultPauseTimeout = 100 * time.Millisecond
)

// bufferPool holds 32 KiB copy buffers. It and smallPool are the only
// package-level variables: a pool is only useful if all relays of the
// process share it, and it holds no state a caller could observe.
var bufferPool = sync.Pool{New: func() any { return new([bufferSize]byte) }}

// smallPool holds the small buffers a direction whose source is a
// ReadWaiter reads with after a wait: it holds one only for that read.
var smallPool = sync.Pool{New: func() any { return new([smallBufferSize]byte) }}

// Endpoint is one side of a relayed session. Relay takes it over: it calls
// Read and CloseWrite from one goroutine, Write from another, and Abort from
// any goroutine at any time; when Relay returns, the endpoint has been closed
// or aborted. TCPConn and StreamConn adapt the two kinds the data plane has;
// other kinds (a WebSocket net.Conn) implement it in their own package.
type Endpoint interface {
	// Read reads the next bytes from the peer. io.EOF means the peer closed
	// its sending side cleanly; any other error is a failure.
	io.Reader
	// Write sends bytes to the peer. It must return an error if it wrote
	// fewer than len(p) bytes.
	io.Writer
	// CloseWrite tells the peer no more data will come (TCP FIN, QUIC FIN),
	// without stopping reads. Relay calls it once, after the last Write,
	// from the goroutine that writes. An endpoint that cannot half-close
	// may close entirely, at the cost of the other direction.
	CloseWrite() error
	// Abort tears the endpoint down at once in both directions and tells
	// the peer it failed (TCP RST; QUIC CancelRead and CancelWrite with
	// code). It must be safe concurrently with Read, Write and CloseWrite,
	// make pending calls return, release the endpoint's resources, and be a
	// no-op when repeated or after Close.
	Abort(code ErrorCode)
	// Close releases the endpoint after both directions ended cleanly.
	// Relay calls it at most once, never concurrently with other methods.
	Close() error
}

// ReadInterrupter is an optional interface of an Endpoint. Relay uses it to
// notice that data stopped flowing so it can return its pooled buffer: it
// sets a deadline a PauseTimeout ahead before reading with the pooled buffer.
// SetReadInterrupt(t) must make a pending or later Read return an error
// matching os.ErrDeadlineExceeded (errors.Is) once t has passed, without
// losing data or harming the endpoint in any way; a zero t removes the
// deadline. net.TCPConn and quic.Stream read deadlines qualify; the
// WebSocket net.Conn of github.com/coder/websocket does not (its read
// deadline closes the connection), so an adapter for it must not implement
// this interface. Without it, Relay returns the pooled buffer whenever a read
// does not fill it, which costs more small reads.
type ReadInterrupter interface {
	SetReadInterrupt(t time.Time) error
}

// ReadWaiter is an optional interface of an Endpoint. Relay uses it to wait
// for data without holding a buffer: WaitRead blocks until a Read would
// return without waiting — data, the end of data or an error is there — and
// reads nothing; then Relay borrows a pooled buffer to read. It must return
// once Abort is called or a read deadline (ReadInterrupter) passes. One that
// returns an error matching errors.ErrUnsupported is never asked again: that
// direction waits with a small buffer. Any other error is left to the Read
// that follows to report. Wrappers of endpoints forward it with WaitRead.
type ReadWaiter interface {
	WaitRead() error
}

// WaitRead waits on e if it is a ReadWaiter; otherwise it returns
// errors.ErrUnsupported. Endpoint wrappers call it to forward WaitRead.
func WaitRead(e any) error {
	if w, ok := e.(ReadWaiter); ok {
		return w.WaitRead()
	}
	return errors.ErrUnsupported
}

// Options tunes Relay. The zero value is ready to use.
type Options struct {
	// Counters, if not nil, receives the bytes relayed as they are written,
	// so they can be read while the relay runs (heartbeats, metrics). One
	// Counters may be shared by many relays to keep totals.
	Counters *Counters
	// PauseTimeout is how long a direction whose source implements
	// ReadInterrupter keeps its pooled buffer without new data before it
	// returns it and waits with the small buffer again. The buffer is given
	// back after between 3/4 of this and all of it. If zero, 100 ms.
	PauseTimeout time.Duration
}

// Counters are live byte and buffer counts, updated atomically by every
// Relay they are given to. The zero value is ready; a Counters is safe for
// concurrent use and must not be copied after first use.
type Counters struct {
	aToB, bToA  atomic.Int64
	buffersHeld atomic.Int64
}

// AToB returns the bytes written to b that were read from a so far.
func (c *Counters) AToB() int64 { return c.aToB.Load() }

// BToA returns the bytes written to a that were read from b so far.
func (c *Counters) BToA() int64 { return c.bToA.Load() }

// BuffersHeld returns how many pooled 32 KiB buffers the relays using c hold
// right now (at most two per relay, none for an idle one).
func (c *Counters) BuffersHeld() int64 { return c.buffersHeld.Load() }

// Stats are the bytes one Relay call moved in each direction.
type Stats struct {
	// AToB is the number of bytes read from a and written to b.
	AToB int64
	// BToA is the number of bytes read from b and written to a.
	BToA int64
}

// Side names an endpoint of a relay.
type Side uint8

// The two endpoints, in the order they are passed to Relay.
const (
	SideA Side = iota
	SideB
)

func (s Side) String() string {
	if s == SideA {
		return "a"
	}
	return "b"
}

// Error is the failure that ended a relay: which endpoint, which operation,
// and the underlying error (a *net.OpError wrapping syscall.ECONNRESET, a
// *quic.StreamError with the peer's code, ...), reachable with errors.Is and
// errors.As.
type Error struct {
	// Side is the endpoint the operation failed on.
	Side Side
	// Op is "read", "write", "close write" or "close".
	Op string
	// Err is the endpoint's error.
	Err error
}

func (e *Error) Error() string {
	return "relay: " + e.Op + " " + e.Side.String() + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Relay copies bytes both ways between a and b until both directions have
// ended, then closes both. A clean end of data (io.EOF) in one direction is
// passed on as CloseWrite of the other endpoint, and the other direction
// keeps going. A failure of any operation aborts both endpoints with
// ErrorCodeReset and is returned as an *Error; the end of ctx aborts both
// with ErrorCodeCanceled and returns context.Cause(ctx). Only the first
// failure is returned; clean ends are not errors. Stats count what was
// written in each direction, also when an error is returned.
//
// Relay takes ownership of a and b (see Endpoint) and returns only after
// both directions have stopped and every goroutine it started has exited. It
// uses one goroutine besides the caller's. Clear any deadline the handshake
// left on an endpoint that does not implement ReadInterrupter; Relay clears
// the read deadline of those that do. a and b must not be nil.
func Relay(ctx context.Context, a, b Endpoint, opts Options) (Stats, error) {
	if a == nil || b == nil {
		panic("relay: nil endpoint")
	}
	if opts.PauseTimeout <= 0 {
		opts.PauseTimeout = DefaultPauseTimeout
	}
	r := &relay{a: a, b: b, opts: opts}

	ctxDone := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(ctxDone)
		r.fail(context.Cause(ctx), ErrorCodeCanceled)
	})

	var stats Stats
	var wg sync.WaitGroup
	wg.Go(func() {
		stats.BToA = r.pump(SideB, b, SideA, a)
	})
	stats.AToB = r.pump(SideA, a, SideB, b)
	wg.Wait()

	if !stop() {
		<-ctxDone // the abort ran or is running: wait for it
	}
	if err := r.failure(); err != nil {
		return stats, err
	}
	// Both directions ended cleanly: release the endpoints.
	var err error
	if cerr := a.Close(); cerr != nil {
		err = &Error{Side: SideA, Op: "close", Err: cerr}
	}
	if cerr := b.Close(); cerr != nil && err == nil {
		err = &Error{Side: SideB, Op: "close", Err: cerr}
	}
	return stats, err
}

// relay is the state one Relay call shares between its two directions.
type relay struct {
	a, b Endpoint
	opts Options

	mu sync.Mutex
	// Guarded by mu.
	err error // first failure; set once
}

// fail records err as the relay's failure if it is the first, and aborts
// both endpoints with code. Later calls do nothing.
func (r *relay) fail(err error, code ErrorCode) {
	r.mu.Lock()
	first := r.err == nil
	if first {
		r.err = err
	}
	r.mu.Unlock()
	if first {
		r.a.Abort(code)
		r.b.Abort(code)
	}
}

func (r *relay) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// pump copies src to dst until src ends or something fails, and returns the
// bytes written to dst.
func (r *relay) pump(srcSide Side, src Endpoint, dstSide Side, dst Endpoint) int64 {
	counter, held := r.counters(srcSide)
	interrupter, _ := src.(ReadInterrupter)
	waiter, _ := src.(ReadWaiter)
	if interrupter != nil {
		if err := interrupter.SetReadInterrupt(time.Time{}); err != nil {
			r.fail(&Error{Side: srcSide, Op: "read", Err: err}, ErrorCodeReset)
			return 0
		}
	}
	pause := r.opts.PauseTimeout

	var (
		written  int64
		small    []byte            // lent after a wait, or made when src cannot wait
		big      *[bufferSize]byte // borrowed from the pool while data flows
		deadline time.Time         // read deadline set on src while big != nil
	)
	var lent *[smallBufferSize]byte // small, lent from smallPool for one read after a wait
	giveBack := func() {
		if lent != nil {
			smallPool.Put(lent)
			lent, small = nil, nil
		}
	}
	defer giveBack()
	borrow := func() {
		big = bufferPool.Get().(*[bufferSize]byte)
		if held != nil {
			held.Add(1)
		}
	}
	release := func() {
		if big != nil {
			bufferPool.Put(big)
			big = nil
			if held != nil {
				held.Add(-1)
			}
		}
	}
	defer release()

	for {
		if big == nil && waiter != nil {
			if err := waiter.WaitRead(); errors.Is(err, errors.ErrUnsupported) {
				waiter = nil
			} else {
				// Data (or an end) is there: read it with a small pooled
				// buffer, and with a big one if it fills that.
				lent = smallPool.Get().(*[smallBufferSize]byte)
				small = lent[:]
			}
		}
		if big == nil && small == nil {
			small = make([]byte, smallBufferSize)
		}
		buf := small
		if big != nil {
			buf = big[:]
			if interrupter != nil {
				// Push the deadline forward only when it is getting close,
				// to keep deadline updates rare while data streams.
				if now := time.Now(); deadline.Sub(now) < pause*3/4 {
					deadline = now.Add(pause)
					if err := interrupter.SetReadInterrupt(deadline); err != nil {
						r.fail(&Error{Side: srcSide, Op: "read", Err: err}, ErrorCodeReset)
						return written
					}
				}
			}
		}

		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			written += int64(w)
			if counter != nil {
				counter.Add(int64(w))
			}
			if werr == nil && w < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				r.fail(&Error{Side: dstSide, Op: "write", Err: werr}, ErrorCodeReset)
				return written
			}
		}

		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if err := dst.CloseWrite(); err != nil {
				r.fail(&Error{Side: dstSide, Op: "close write", Err: err}, ErrorCodeReset)
			}
			return written
		case big != nil && interrupter != nil && errors.Is(rerr, os.ErrDeadlineExceeded):
			// The flow paused: give the buffer back and wait with the
			// small one, without a deadline.
			release()
			deadline = time.Time{}
			if err := interrupter.SetReadInterrupt(time.Time{}); err != nil {
				r.fail(&Error{Side: srcSide, Op: "read", Err: err}, ErrorCodeReset)
				return written
			}
			continue
		default:
			r.fail(&Error{Side: srcSide, Op: "read", Err: rerr}, ErrorCodeReset)
			return written
		}

		switch {
		case big == nil && n == len(small):
			// A full small read: more is likely waiting.
			borrow()
		case big != nil && interrupter == nil && n < len(buf):
			// No way to notice a pause while blocked in Read: give the
			// buffer back as soon as a read finds less than it holds.
			release()
		}
		giveBack()
	}
}

// counters returns the live counters for the direction that reads from
// side, or nils.
func (r *relay) counters(from Side) (bytes, held *atomic.Int64) {
	c := r.opts.Counters
	if c == nil {
		return nil, nil
	}
	if from == SideA {
		return &c.aToB, &c.buffersHeld
	}
	return &c.bToA, &c.buffersHeld
}
