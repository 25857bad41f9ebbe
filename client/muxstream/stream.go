package muxstream

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Errors a Stream returns besides *ResetError and *DecodeError.
var (
	// ErrPeerClosed: the peer closed the whole session (a FIN without END,
	// or after its END without RESET) while this side still had data to
	// send. Reads end with io.EOF first.
	ErrPeerClosed = errors.New("muxstream: the peer closed the session")
	// ErrConnectionLost: the multiplexed connection ended under the
	// session.
	ErrConnectionLost = errors.New("muxstream: the connection to the peer was lost")
)

// writeChunk is the most a Write puts in one DATA frame.
const writeChunk = 32 << 10

// resetWait bounds the wait to send a RESET frame when the stream's send
// window is full.
const resetWait = time.Second

// framePool holds the buffers a Write builds its frames in, for the time of
// one Write only.
var framePool = sync.Pool{New: func() any { return new([HeaderSize + writeChunk]byte) }}

// Stream is one session on a multiplexed connection: a yamux stream that
// carries the frames of this package. It implements relay.Endpoint (Read,
// Write, CloseWrite, Abort, Close) and broker.ClientStream (Fail). One
// goroutine may read while another writes; Abort, Fail and Close may be
// called from any goroutine.
//
// Once this side has read the peer's END, a goroutine of the Stream reads
// on in its place, to see a RESET or close the peer sends after it; Close,
// Abort and Fail stop it and wait for it.
type Stream struct {
	st   *yamux.Stream
	lost func() bool // the connection ended

	rd      frameReader // used by Read until it ends, then by the watcher
	readEnd atomic.Bool // Read returned io.EOF

	wmu sync.Mutex
	// Guarded by wmu.
	wstate writeState

	// peer is how the peer ended the session after this side read its END
	// (set once, by the watcher): a *ResetError, ErrPeerClosed or
	// ErrConnectionLost.
	peer      atomic.Pointer[error]
	aborting  atomic.Bool // Abort or Fail began
	ending    sync.Once   // Close, Abort, Fail
	watchOnce sync.Once
	watching  sync.WaitGroup
	stopping  atomic.Bool // the watcher must return
}

// writeState is what this side has sent.
type writeState uint8

const (
	writeOpen   writeState = iota
	writeEnded             // END sent
	writeReset             // RESET sent
	writeBroken            // a write failed, maybe inside a frame: no frame may follow
)

// New returns a Stream over st.
func New(st *yamux.Stream) *Stream {
	sess := st.Session()
	return &Stream{st: st, lost: sess.IsClosed, rd: frameReader{src: st}}
}

// ID is the stream's yamux id, unique within its connection.
func (s *Stream) ID() uint32 { return s.st.StreamID() }

// Read reads the session's next bytes. It returns io.EOF after the peer's
// END (or its plain close: then writes fail with ErrPeerClosed), a
// *ResetError after its RESET, ErrConnectionLost when the connection
// ended, and net.ErrClosed after Abort or Fail.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.rd.Read(p)
	if err == nil {
		return n, nil
	}
	switch {
	case s.aborting.Load():
		return n, net.ErrClosed
	case err == errFIN && !s.lost():
		// The peer closed without END: a plain close.
		s.setPeer(ErrPeerClosed)
		err = io.EOF
	case err == errFIN || errors.Is(err, io.ErrUnexpectedEOF):
		s.rd.err = ErrConnectionLost
		if !s.lost() {
			// A stream cut inside a frame while the connection lives on:
			// the peer reset it (yamux RST) or broke the format.
			s.rd.err = &ResetError{Kind: ResetAborted}
		}
		return n, s.rd.err
	case isTimeout(err):
		return n, err
	case errors.Is(err, yamux.ErrConnectionReset):
		s.rd.err = &ResetError{Kind: ResetAborted}
		return n, s.rd.err
	case errors.Is(err, yamux.ErrSessionShutdown):
		s.rd.err = ErrConnectionLost
		return n, s.rd.err
	}
	if err == io.EOF {
		s.readEnd.Store(true)
		if s.peerErr() == nil {
			s.watchOnce.Do(func() {
				if !s.stopping.Load() {
					s.watching.Add(1)
					go s.watch()
				}
			})
		}
	}
	return n, err
}

// WaitRead blocks until Read would return without waiting for the peer —
// bytes of the session, its end or an error are there — and reads nothing
// (relay.ReadWaiter), so that an idle session's relay holds no buffer.
// Abort, Fail and the connection's end end the wait. Only the goroutine
// that reads may call it; an error is for the Read that follows.
func (s *Stream) WaitRead() error {
	if s.rd.err != nil || s.aborting.Load() {
		return nil
	}
	// A yamux stream's Read with no room waits for data and takes none.
	_, err := s.rd.src.Read(nil)
	return err
}

// ReadClosed reports whether the peer ended its direction (Read returned
// io.EOF). It is safe to call from any goroutine.
func (s *Stream) ReadClosed() bool { return s.readEnd.Load() }

// PeerClosed reports whether the peer closed the whole session: writes
// fail with ErrPeerClosed, and CloseWrite has nothing left to do.
func (s *Stream) PeerClosed() bool {
	p := s.peer.Load()
	return p != nil && *p == ErrPeerClosed
}

// watch reads what follows the peer's END: a RESET or the peer's close.
// Either ends this side's writes.
func (s *Stream) watch() {
	defer s.watching.Done()
	r := frameReader{src: s.st}
	var b [1]byte
	_, err := r.Read(b[:])
	switch {
	case s.stopping.Load():
		return
	case err == errFIN && !s.lost():
		err = ErrPeerClosed
	case err == errFIN || errors.Is(err, yamux.ErrSessionShutdown):
		err = ErrConnectionLost
	case err == nil:
		err = &DecodeError{"type", "DATA after END"}
	case errors.Is(err, io.EOF):
		err = &DecodeError{"type", "END after END"}
	case errors.Is(err, yamux.ErrConnectionReset), errors.Is(err, io.ErrUnexpectedEOF):
		err = &ResetError{Kind: ResetAborted}
	}
	s.setPeer(err)
	// Wake a Write waiting for room: the peer reads no more.
	_ = s.st.SetWriteDeadline(time.Now())
}

func (s *Stream) setPeer(err error) { s.peer.CompareAndSwap(nil, &err) }

func (s *Stream) peerErr() error {
	if p := s.peer.Load(); p != nil {
		return *p
	}
	return nil
}

// Write sends p in DATA frames. It fails after CloseWrite, Abort or Fail,
// and once the peer reset or closed the session.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wstate != writeOpen {
		return 0, s.closedErr()
	}
	written := 0
	for len(p) > 0 {
		if err := s.peerErr(); err != nil {
			return written, err
		}
		chunk := p[:min(len(p), writeChunk)]
		buf := framePool.Get().(*[HeaderSize + writeChunk]byte)
		frame, _ := AppendData(buf[:0], chunk)
		_, err := s.st.Write(frame)
		framePool.Put(buf)
		if err != nil {
			s.wstate = writeBroken
			return written, s.writeErr(err)
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// closedErr is the error of a write after this side's end.
func (s *Stream) closedErr() error {
	if err := s.peerErr(); err != nil {
		return err
	}
	return net.ErrClosed
}

// writeErr maps a failed yamux write to the Stream's errors.
func (s *Stream) writeErr(err error) error {
	switch {
	case s.peerErr() != nil:
		return s.peerErr()
	case s.aborting.Load():
		return net.ErrClosed
	case errors.Is(err, yamux.ErrSessionShutdown) || s.lost():
		return ErrConnectionLost
	case errors.Is(err, yamux.ErrConnectionReset):
		return &ResetError{Kind: ResetAborted}
	case connError(err):
		// The connection's own write failed; yamux ends the session
		// right after it hands the writer this error.
		return ErrConnectionLost
	}
	return err
}

// connError reports whether err, from a yamux write, is the underlying
// connection's error rather than one of yamux's own.
func connError(err error) bool {
	for _, y := range []error{yamux.ErrStreamClosed, yamux.ErrTimeout, yamux.ErrConnectionWriteTimeout,
		yamux.ErrRecvWindowExceeded, yamux.ErrUnexpectedFlag, yamux.ErrRemoteGoAway, yamux.ErrStreamsExhausted} {
		if errors.Is(err, y) {
			return false
		}
	}
	return !isTimeout(err)
}

// CloseWrite sends END: the peer reads io.EOF, and this side keeps
// reading. It does nothing after the peer closed the session (there is no
// one to tell), and fails after the peer reset it.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.closeWriteLocked()
}

func (s *Stream) closeWriteLocked() error {
	switch err := s.peerErr(); {
	case err == ErrPeerClosed:
		return nil
	case err != nil:
		return err
	case s.wstate == writeEnded:
		return nil
	case s.wstate != writeOpen:
		return net.ErrClosed
	}
	var b [HeaderSize]byte
	if _, err := s.st.Write(AppendEnd(b[:0])); err != nil {
		s.wstate = writeBroken
		if err := s.writeErr(err); err != ErrPeerClosed {
			return err
		}
		// The peer closed the session while END was on its way: as above,
		// there is no one left to tell.
	}
	s.wstate = writeEnded
	return nil
}

// Close ends the session cleanly: it sends END if CloseWrite did not, then
// closes the yamux stream. Idempotent; after Abort or Fail it does nothing.
func (s *Stream) Close() error {
	var err error
	s.ending.Do(func() {
		s.wmu.Lock()
		err = s.closeWriteLocked()
		s.wmu.Unlock()
		s.stopWatch()
		_ = s.st.Close()
		if err == ErrPeerClosed || err == net.ErrClosed {
			err = nil
		}
	})
	return err
}

// Abort aborts the session at once: pending reads and writes return, and
// the peer reads a *ResetError of the kind that matches code (the relay's
// error code: 0x2 canceled, anything else aborted). Idempotent.
func (s *Stream) Abort(code uint64) {
	kind := ResetAborted
	if code == uint64(ResetCanceled) {
		kind = ResetCanceled
	}
	s.reset(kind, "")
}

// Fail aborts the session with ResetFailed and reason, which the peer
// reads (Failure). Idempotent with Abort and Close.
func (s *Stream) Fail(reason string) { s.reset(ResetFailed, reason) }

func (s *Stream) reset(kind ResetKind, reason string) {
	s.ending.Do(func() {
		s.aborting.Store(true)
		s.stopping.Store(true)
		now := time.Now()
		// Wake a pending Read (the relay's or the watcher's) and a Write
		// waiting for room, so that the lock below is free.
		_ = s.st.SetReadDeadline(now)
		_ = s.st.SetWriteDeadline(now)
		s.wmu.Lock()
		if (s.wstate == writeOpen || s.wstate == writeEnded) && s.peerErr() == nil {
			var b [HeaderSize + maxResetPayload]byte
			_ = s.st.SetWriteDeadline(time.Now().Add(resetWait))
			if _, err := s.st.Write(AppendReset(b[:0], kind, reason)); err == nil {
				s.wstate = writeReset
			} else {
				s.wstate = writeBroken
			}
		}
		s.wmu.Unlock()
		s.stopWatch()
		_ = s.st.Close()
	})
}

// stopWatch stops the watcher, if it runs, and waits for it.
func (s *Stream) stopWatch() {
	s.stopping.Store(true)
	started := true
	s.watchOnce.Do(func() { started = false })
	if started {
		_ = s.st.SetReadDeadline(time.Now())
		s.watching.Wait()
	}
}

// isTimeout reports whether err is a read or write deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
