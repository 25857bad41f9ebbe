package dataplane

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Buffer sizes of frameReader, in bytes.
const (
	// minReadBuffer is the smallest payload buffer a reader allocates.
	minReadBuffer = 256
	// maxRetainedBuffer is the largest payload buffer a reader keeps
	// between frames. A larger frame (only the control stream allows one:
	// a certificate exchange) is read into a buffer that is dropped after
	// decoding, so a peer cannot pin a megabyte per connection.
	maxRetainedBuffer = MaxSessionPayload
)

// frameReader reads frames of one stream kind. It reads exactly the frame's
// bytes from src, with io.ReadFull, and never more.
type frameReader struct {
	src  io.Reader
	kind StreamKind
	hdr  [FrameHeaderLen]byte
	buf  []byte // payload buffer reused between frames, up to maxRetainedBuffer
	err  error  // sticky: io.EOF, an I/O error or a *MessageTooLargeError
}

// reset points the reader at src and forgets any sticky error; the buffer
// is kept.
func (f *frameReader) reset(src io.Reader) {
	f.src = src
	f.err = nil
}

// next reads one frame and returns its payload, which aliases the reader's
// buffer until the next call. It returns io.EOF itself if src ends before
// the frame's first byte, a wrapped io.ErrUnexpectedEOF if it ends inside
// the frame, other I/O errors wrapped, and a *MessageTooLargeError if the
// declared length exceeds the stream's limit (checked before the payload is
// read or allocated). Every error is sticky: the stream is out of step.
func (f *frameReader) next() ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	if _, err := io.ReadFull(f.src, f.hdr[:]); err != nil {
		if err != io.EOF {
			err = fmt.Errorf("dataplane: read %s frame header: %w", f.kind, err)
		}
		f.err = err
		return nil, err
	}
	size := uint64(binary.BigEndian.Uint32(f.hdr[:]))
	if limit := f.kind.limit(); size > limit {
		f.err = &MessageTooLargeError{Stream: f.kind, Size: size, Limit: limit}
		return nil, f.err
	}
	p := f.payloadBuffer(int(size))
	if _, err := io.ReadFull(f.src, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		f.err = fmt.Errorf("dataplane: read %s frame payload of %d bytes: %w", f.kind, size, err)
		return nil, f.err
	}
	return p, nil
}

// payloadBuffer returns a buffer of n bytes, n within the stream's limit.
func (f *frameReader) payloadBuffer(n int) []byte {
	if n <= cap(f.buf) {
		return f.buf[:n]
	}
	if n > maxRetainedBuffer {
		return make([]byte, n)
	}
	c := max(n, 2*cap(f.buf), minReadBuffer)
	c = min(c, maxRetainedBuffer)
	f.buf = make([]byte, n, c)
	return f.buf
}

// ControlReader reads control messages from the control stream. Create it
// with NewControlReader; the zero value has no source and must not be
// used. It is not safe for concurrent use.
type ControlReader struct {
	fr     frameReader
	values controlValues
}

// NewControlReader returns a reader of control messages from src, with the
// payload limit MaxControlPayload. It reads exactly one frame per call and
// buffers nothing beyond it.
func NewControlReader(src io.Reader) *ControlReader {
	return &ControlReader{fr: frameReader{src: src, kind: ControlStream}}
}

// Reset points r at src and clears a sticky error, keeping r's buffers, so
// that one ControlReader can serve successive connections.
func (r *ControlReader) Reset(src io.Reader) { r.fr.reset(src) }

// ReadControl reads and decodes the next control message.
//
// The returned message is reused: the next ReadControl that returns a
// message of the same type overwrites it in place (this keeps the steady
// state allocation-free). A caller that keeps a message past the next call
// keeps a copy of the value (hb := *m); strings and slices inside a message
// are always freshly allocated and never reused or aliased, so a value
// copy is independent.
//
// Errors:
//   - io.EOF (unwrapped) when the stream ends cleanly before a frame;
//   - an I/O error wrapped with %w, io.ErrUnexpectedEOF if the stream ends
//     inside a frame;
//   - *MessageTooLargeError when the frame declares a payload over
//     MaxControlPayload (nothing more was read);
//   - the errors of DecodeControl (*TruncatedError, *UnknownTagError,
//     *InvalidFieldError) for a bad payload.
//
// After the first three kinds r is dead and returns the same error forever.
// After a payload error the whole frame has been consumed and r can read
// the next one: DESIGN.md §2 has the control loop log an unknown tag and go
// on. The version is not checked (see CheckVersion). ClassifyControlError
// sorts these errors, and CheckVersion's, into skipped and fatal.
func (r *ControlReader) ReadControl() (ControlMessage, error) {
	p, err := r.fr.next()
	if err != nil {
		return nil, err
	}
	return decodeControl(p, &r.values)
}

// SessionReader reads the ConnectRequest or ConnectResponse at the start
// of a session stream. It reads exactly the frame, never past it, so the
// stream can be handed to a raw byte copy right after. Create it with
// NewSessionReader; the zero value has no source and must not be used. It
// is not safe for concurrent use; Reset lets a pool reuse it across
// streams.
type SessionReader struct {
	fr frameReader
}

// NewSessionReader returns a reader of session messages from src, with the
// payload limit MaxSessionPayload.
func NewSessionReader(src io.Reader) *SessionReader {
	return &SessionReader{fr: frameReader{src: src, kind: SessionStream}}
}

// Reset points r at src and clears a sticky error, keeping r's buffer.
func (r *SessionReader) Reset(src io.Reader) { r.fr.reset(src) }

// ReadConnectRequest reads and decodes a ConnectRequest. Errors are those
// of ControlReader.ReadControl, with MaxSessionPayload as the limit and
// the payload errors of DecodeConnectRequest.
func (r *SessionReader) ReadConnectRequest() (ConnectRequest, error) {
	p, err := r.fr.next()
	if err != nil {
		return ConnectRequest{}, err
	}
	return DecodeConnectRequest(p)
}

// ReadConnectResponse reads and decodes a ConnectResponse. Errors are those
// of ControlReader.ReadControl, with MaxSessionPayload as the limit and the
// payload errors of DecodeConnectResponse. Reading a Success does not
// allocate.
func (r *SessionReader) ReadConnectResponse() (ConnectResponse, error) {
	p, err := r.fr.next()
	if err != nil {
		return ConnectResponse{}, err
	}
	return DecodeConnectResponse(p)
}
