// Package wsstream carries one TCP-like byte stream over a WebSocket, as the
// gateway's client entry and "outpost connect" speak it (DESIGN.md §9):
//
//   - binary messages carry the bytes, in order;
//   - an empty binary message ends one direction (a half-close, like TCP
//     FIN): the other direction keeps flowing;
//   - a close frame ends both; a close with status 4502 (StatusConnectFailed)
//     carries the reason a session could not be opened. A close frame holds
//     at most 123 bytes of reason, so a longer one (every agent's reason,
//     when all failed) is sent whole as a text message just before the
//     close, which carries it cut short.
//
// Clients that know nothing of half-close may simply close the WebSocket.
package wsstream

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// ErrPeerClosed is what Write returns once the peer closed the WebSocket
// (a normal close frame): no one reads what would be written.
var ErrPeerClosed = errors.New("wsstream: the peer closed the WebSocket")

// StatusConnectFailed closes a WebSocket whose session could not be opened;
// the close reason says why.
const StatusConnectFailed websocket.StatusCode = 4502

// Stream adapts a WebSocket to a byte stream. It implements
// relay.Endpoint: Read, Write, CloseWrite, Abort, Close. One goroutine may
// read while another writes.
type Stream struct {
	ws  *websocket.Conn
	ctx context.Context

	r          io.Reader // current message, nil between messages
	readEOF    bool
	readDone   atomic.Bool // readEOF, for other goroutines
	peerClosed atomic.Bool // a normal close frame was read
	detail     string      // the last text message: the full reason of a failure close

	wmu       sync.Mutex
	writeDone bool
	once      sync.Once
}

// New returns a Stream over ws; ctx bounds every read and write.
func New(ctx context.Context, ws *websocket.Conn) *Stream {
	return &Stream{ws: ws, ctx: ctx}
}

// Read reads the stream's next bytes. It returns io.EOF after the peer's
// empty message or its normal close.
func (s *Stream) Read(p []byte) (int, error) {
	if s.readEOF {
		return 0, io.EOF
	}
	for {
		if s.r == nil {
			typ, r, err := s.ws.Reader(s.ctx)
			if err != nil {
				switch st := websocket.CloseStatus(err); {
				case st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway:
					s.readEOF = true
					s.peerClosed.Store(true)
					s.readDone.Store(true)
					return 0, io.EOF
				case st == StatusConnectFailed && s.detail != "":
					return 0, websocket.CloseError{Code: st, Reason: s.detail}
				}
				return 0, err
			}
			if typ == websocket.MessageText {
				// The full reason of the failure close that follows.
				b, err := io.ReadAll(io.LimitReader(r, maxDetail))
				if err == nil {
					_, err = io.Copy(io.Discard, r)
				}
				if err != nil {
					return 0, err
				}
				s.detail = string(b)
				continue
			}
			s.r = r
			n, err := r.Read(p)
			if n == 0 && err == io.EOF {
				s.r = nil
				s.readEOF = true
				s.readDone.Store(true)
				return 0, io.EOF // an empty message: half-close
			}
			if err == io.EOF {
				s.r, err = nil, nil
			}
			return n, err
		}
		n, err := s.r.Read(p)
		if err == io.EOF {
			s.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// ReadClosed reports whether the peer ended its direction (an empty message
// or a normal close was read). It is safe to call from any goroutine.
func (s *Stream) ReadClosed() bool { return s.readDone.Load() }

// PeerClosed reports whether the peer closed the WebSocket normally (Read
// returned io.EOF for its close frame): writes fail with ErrPeerClosed and
// CloseWrite has nothing left to do. It is safe to call from any goroutine.
func (s *Stream) PeerClosed() bool { return s.peerClosed.Load() }

// Write sends p as one binary message. An empty p sends nothing. Once the
// peer closed the WebSocket it fails with ErrPeerClosed.
func (s *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	switch {
	case s.peerClosed.Load():
		return 0, ErrPeerClosed
	case s.writeDone:
		return 0, errors.New("wsstream: write after CloseWrite")
	}
	if err := s.ws.Write(s.ctx, websocket.MessageBinary, p); err != nil {
		if s.peerClosed.Load() {
			return 0, ErrPeerClosed
		}
		return 0, err
	}
	return len(p), nil
}

// CloseWrite sends the empty message that ends this direction. After the
// peer closed the WebSocket it does nothing.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writeDone || s.peerClosed.Load() {
		return nil
	}
	s.writeDone = true
	if err := s.ws.Write(s.ctx, websocket.MessageBinary, nil); err != nil && !s.peerClosed.Load() {
		return err
	}
	return nil
}

// Abort drops the connection at once.
func (s *Stream) Abort(uint64) {
	s.once.Do(func() { _ = s.ws.CloseNow() })
}

// Close closes the WebSocket normally (both directions are done).
func (s *Stream) Close() error {
	s.once.Do(func() { _ = s.ws.Close(websocket.StatusNormalClosure, "") })
	return nil
}

// CloseWithReason closes the WebSocket with status and reason, trimmed to
// what a close frame holds.
func (s *Stream) CloseWithReason(status websocket.StatusCode, reason string) {
	s.once.Do(func() {
		if len(reason) > maxReason {
			// Whole (up to maxDetail) in a text message first.
			s.wmu.Lock()
			_ = s.ws.Write(s.ctx, websocket.MessageText, []byte(cut(reason, maxDetail)))
			s.wmu.Unlock()
		}
		_ = s.ws.Close(status, Truncate(reason))
	})
}

const (
	// maxReason is the room for a reason in a close frame (125 - 2 bytes).
	maxReason = 123
	// maxDetail bounds the full reason sent, and read, as a text message.
	maxDetail = 4096
)

// Truncate fits reason into a close frame, cutting on a UTF-8 boundary.
func Truncate(reason string) string { return cut(reason, maxReason) }

// cut fits s into n bytes, cutting on a UTF-8 boundary and marking the cut
// with "...".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - 3
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + "..."
}

// Failure extracts the gateway's reason from an error that ended a stream:
// for a close with StatusConnectFailed it returns the reason and true.
func Failure(err error) (string, bool) {
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Code == StatusConnectFailed {
		return ce.Reason, true
	}
	return "", false
}
