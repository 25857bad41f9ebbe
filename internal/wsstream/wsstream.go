// Package wsstream carries one TCP-like byte stream over a WebSocket, as the
// gateway's client entry and "outpost connect" speak it (DESIGN.md §9):
//
//   - binary messages carry the bytes, in order;
//   - an empty binary message ends one direction (a half-close, like TCP
//     FIN): the other direction keeps flowing;
//   - a close frame ends both; a close with status 4502 (StatusConnectFailed)
//     carries the reason a session could not be opened.
//
// Clients that know nothing of half-close may simply close the WebSocket.
package wsstream

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"
)

// StatusConnectFailed closes a WebSocket whose session could not be opened;
// the close reason says why.
const StatusConnectFailed websocket.StatusCode = 4502

// Stream adapts a WebSocket to a byte stream. It implements
// relay.Endpoint: Read, Write, CloseWrite, Abort, Close. One goroutine may
// read while another writes.
type Stream struct {
	ws  *websocket.Conn
	ctx context.Context

	r       io.Reader // current message, nil between messages
	readEOF bool

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
				if st := websocket.CloseStatus(err); st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway {
					s.readEOF = true
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				s.ws.Close(websocket.StatusUnsupportedData, "binary messages only")
				return 0, errors.New("wsstream: text message received; the stream is binary")
			}
			s.r = r
			n, err := r.Read(p)
			if n == 0 && err == io.EOF {
				s.r = nil
				s.readEOF = true
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

// Write sends p as one binary message. An empty p sends nothing.
func (s *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writeDone {
		return 0, errors.New("wsstream: write after CloseWrite")
	}
	if err := s.ws.Write(s.ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite sends the empty message that ends this direction.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writeDone {
		return nil
	}
	s.writeDone = true
	return s.ws.Write(s.ctx, websocket.MessageBinary, nil)
}

// Abort drops the connection at once.
func (s *Stream) Abort(quic.StreamErrorCode) {
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
	s.once.Do(func() { _ = s.ws.Close(status, Truncate(reason)) })
}

// maxReason is the room for a reason in a close frame (125 - 2 bytes).
const maxReason = 123

// Truncate fits reason into a close frame, cutting on a UTF-8 boundary.
func Truncate(reason string) string {
	if len(reason) <= maxReason {
		return reason
	}
	cut := maxReason - 3
	for cut > 0 && reason[cut]&0xC0 == 0x80 {
		cut--
	}
	return reason[:cut] + "..."
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
