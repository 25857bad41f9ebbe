package relay

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// TCPEndpoint adapts a TCP connection to Endpoint, ReadInterrupter and (on
// Linux and the BSDs) ReadWaiter: CloseWrite shuts down the sending side
// (FIN), Abort resets the connection (SO_LINGER 0 then close: RST), Close
// closes it. Build it with TCPConn. It is safe for the concurrent use Relay
// makes of it.
type TCPEndpoint struct {
	conn *net.TCPConn
	once sync.Once // closes conn, by Abort or Close
	// Used by WaitRead only, from the reading goroutine.
	raw     syscall.RawConn
	ready   func(fd uintptr) bool // peeks: false while nothing is there
	peekErr error                 // the socket error a peek took, for the next Read
}

// TCPConn returns an Endpoint for c; it takes ownership of c.
func TCPConn(c *net.TCPConn) *TCPEndpoint {
	return &TCPEndpoint{conn: c}
}

// Read reads from the connection. After WaitRead it first returns the
// socket error WaitRead's peek took, if any, as the read's own.
func (e *TCPEndpoint) Read(p []byte) (int, error) {
	if err := e.peekErr; err != nil {
		e.peekErr = nil
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: e.conn.LocalAddr(), Addr: e.conn.RemoteAddr(), Err: os.NewSyscallError("read", err)}
	}
	return e.conn.Read(p)
}

// Write writes to the connection.
func (e *TCPEndpoint) Write(p []byte) (int, error) { return e.conn.Write(p) }

// CloseWrite shuts down the sending side: the peer reads EOF.
func (e *TCPEndpoint) CloseWrite() error { return e.conn.CloseWrite() }

// Abort resets the connection: the peer gets an RST (ECONNRESET) and data not
// yet sent is dropped. The code is not representable in TCP and is ignored.
// Idempotent; a no-op after Close.
func (e *TCPEndpoint) Abort(ErrorCode) {
	e.once.Do(func() {
		_ = e.conn.SetLinger(0) // if this fails, Close still ends the connection (FIN)
		_ = e.conn.Close()
	})
}

// Close closes the connection gracefully. Idempotent; after Abort it does
// nothing and returns nil.
func (e *TCPEndpoint) Close() error {
	var err error
	e.once.Do(func() { err = e.conn.Close() })
	return err
}

// SetReadInterrupt sets the connection's read deadline.
func (e *TCPEndpoint) SetReadInterrupt(t time.Time) error { return e.conn.SetReadDeadline(t) }

// StreamEndpoint adapts a QUIC bidirectional stream to Endpoint,
// ReadInterrupter and ReadWaiter: CloseWrite closes the send side (FIN) and keeps reading,
// Abort cancels both sides with an application error code (RESET_STREAM and
// STOP_SENDING), Close ends whatever is left of the stream gracefully. Build
// it with StreamConn. It is safe for the concurrent use Relay makes of it.
type StreamEndpoint struct {
	stream  *quic.Stream
	once    sync.Once   // ends the stream, by Abort or Close
	aborted atomic.Bool // CloseWrite must not follow CancelWrite
	peek    [1]byte     // WaitRead's, from the reading goroutine
}

// StreamConn returns an Endpoint for s; it takes ownership of s.
func StreamConn(s *quic.Stream) *StreamEndpoint {
	return &StreamEndpoint{stream: s}
}

// Read reads from the stream; a peer reset is a *quic.StreamError.
func (e *StreamEndpoint) Read(p []byte) (int, error) { return e.stream.Read(p) }

// Write writes to the stream; a peer STOP_SENDING is a *quic.StreamError.
func (e *StreamEndpoint) Write(p []byte) (int, error) { return e.stream.Write(p) }

// CloseWrite closes the send side of the stream (FIN after the data written);
// reading goes on. After Abort it returns net.ErrClosed.
func (e *StreamEndpoint) CloseWrite() error {
	if e.aborted.Load() {
		return net.ErrClosed
	}
	return e.stream.Close()
}

// Abort cancels both directions of the stream with code: the peer's reads
// fail with a *quic.StreamError carrying code and its writes are stopped.
// Data not yet delivered may be lost. Idempotent; a no-op after Close.
func (e *StreamEndpoint) Abort(code ErrorCode) {
	e.once.Do(func() {
		e.aborted.Store(true)
		e.stream.CancelRead(quic.StreamErrorCode(code))
		e.stream.CancelWrite(quic.StreamErrorCode(code))
	})
}

// Close ends the stream gracefully: it stops receiving with ErrorCodeNoError
// (nothing is sent if the peer's data was read to the end) and closes the
// send side (nothing more is sent if CloseWrite was called). Idempotent;
// after Abort it does nothing and returns nil.
func (e *StreamEndpoint) Close() error {
	var err error
	e.once.Do(func() {
		e.stream.CancelRead(ErrorCodeNoError)
		err = e.stream.Close()
	})
	return err
}

// SetReadInterrupt sets the stream's read deadline.
func (e *StreamEndpoint) SetReadInterrupt(t time.Time) error { return e.stream.SetReadDeadline(t) }

// WaitRead blocks until the stream has data, its end or an error to read,
// without reading it (ReadWaiter): it peeks at one byte. The read deadline
// and Abort end the wait; an error is for the Read that follows.
func (e *StreamEndpoint) WaitRead() error {
	_, err := e.stream.Peek(e.peek[:])
	return err
}
