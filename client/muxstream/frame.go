package muxstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"unicode/utf8"
)

// FrameType is the first byte of a frame.
type FrameType uint8

// The frame types.
const (
	// FrameData carries 1 to MaxData bytes of the session.
	FrameData FrameType = 0x00
	// FrameEnd ends the sender's direction cleanly; it has no payload.
	FrameEnd FrameType = 0x01
	// FrameReset aborts the session: u8 kind, then a UTF-8 reason of at
	// most MaxReason bytes.
	FrameReset FrameType = 0x02
)

var frameTypeNames = [...]string{FrameData: "DATA", FrameEnd: "END", FrameReset: "RESET"}

func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("FrameType(0x%02x)", uint8(t))
}

// ResetKind says why a RESET frame aborts a session.
type ResetKind uint8

// The reset kinds. ResetAborted and ResetCanceled match the relay's error
// codes 0x1 and 0x2 (dataplane/relay): keep them stable.
const (
	// ResetAborted: the sender's side of the session failed or was reset
	// (the local connection, the target, the agent).
	ResetAborted ResetKind = 0x01
	// ResetCanceled: the sender ended the session on purpose (shutdown).
	ResetCanceled ResetKind = 0x02
	// ResetFailed: the gateway could not open or had to end the session;
	// the reason says why, for the user.
	ResetFailed ResetKind = 0x03
)

// Sizes of the frame format.
const (
	// HeaderSize is the size of a frame's header: type and length.
	HeaderSize = 5
	// MaxData is the largest DATA payload; exactly MaxData is allowed.
	MaxData = 64 << 10
	// MaxReason is the longest reason a RESET carries, in bytes.
	MaxReason = 4096
	// maxResetPayload is a RESET's largest payload: kind and reason.
	maxResetPayload = 1 + MaxReason
)

// DecodeError is a malformed frame: which field, and why.
type DecodeError struct {
	Field, Reason string
}

func (e *DecodeError) Error() string {
	return "muxstream: malformed frame: " + e.Field + ": " + e.Reason
}

// ErrShort is returned by DecodeFrame when b holds no complete frame yet.
var ErrShort = errors.New("muxstream: incomplete frame")

// Frame is one decoded frame.
type Frame struct {
	Type FrameType
	// Data is a DATA frame's payload; DecodeFrame makes it alias its
	// input.
	Data []byte
	// Kind and Reason are a RESET frame's.
	Kind   ResetKind
	Reason string
}

// AppendData appends a DATA frame carrying p to dst. It returns an error,
// and dst unchanged, if p is empty or longer than MaxData.
func AppendData(dst, p []byte) ([]byte, error) {
	if len(p) == 0 || len(p) > MaxData {
		return dst, fmt.Errorf("muxstream: DATA payload of %d bytes: want 1 to %d", len(p), MaxData)
	}
	dst = appendHeader(dst, FrameData, len(p))
	return append(dst, p...), nil
}

// AppendEnd appends an END frame to dst.
func AppendEnd(dst []byte) []byte { return appendHeader(dst, FrameEnd, 0) }

// AppendReset appends a RESET frame to dst. A reason that is not valid
// UTF-8 has its bad bytes replaced; one longer than MaxReason is cut to it,
// on a character boundary.
func AppendReset(dst []byte, kind ResetKind, reason string) []byte {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) > MaxReason {
		// A character cut in two is dropped whole.
		reason = strings.ToValidUTF8(reason[:MaxReason], "")
	}
	dst = appendHeader(dst, FrameReset, 1+len(reason))
	dst = append(dst, byte(kind))
	return append(dst, reason...)
}

// AppendFrame appends f to dst, as AppendData, AppendEnd or AppendReset
// would; it returns an error for an unknown type or a DATA payload out of
// bounds.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	switch f.Type {
	case FrameData:
		return AppendData(dst, f.Data)
	case FrameEnd:
		return AppendEnd(dst), nil
	case FrameReset:
		return AppendReset(dst, f.Kind, f.Reason), nil
	}
	return dst, fmt.Errorf("muxstream: unknown frame type %v", f.Type)
}

func appendHeader(dst []byte, t FrameType, n int) []byte {
	dst = append(dst, byte(t))
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// checkHeader checks a frame's declared payload length against its type,
// before anything is read or allocated for the payload.
func checkHeader(t FrameType, n uint32) error {
	switch t {
	case FrameData:
		if n == 0 || n > MaxData {
			return &DecodeError{"length", fmt.Sprintf("DATA payload of %d bytes: want 1 to %d", n, MaxData)}
		}
	case FrameEnd:
		if n != 0 {
			return &DecodeError{"length", fmt.Sprintf("END with a payload of %d bytes", n)}
		}
	case FrameReset:
		if n == 0 || n > maxResetPayload {
			return &DecodeError{"length", fmt.Sprintf("RESET payload of %d bytes: want 1 to %d", n, maxResetPayload)}
		}
	default:
		return &DecodeError{"type", fmt.Sprintf("unknown frame type 0x%02x", uint8(t))}
	}
	return nil
}

// decodeReset decodes a RESET payload (kind and reason).
func decodeReset(p []byte) (ResetKind, string, error) {
	if !utf8.Valid(p[1:]) {
		return 0, "", &DecodeError{"reason", "invalid UTF-8"}
	}
	return ResetKind(p[0]), string(p[1:]), nil
}

// DecodeFrame decodes the frame at the start of b and returns it with its
// size. It returns ErrShort when b holds no complete frame, and a
// *DecodeError for a malformed one (checked on the header, before the
// payload is looked at). Frame.Data aliases b.
func DecodeFrame(b []byte) (Frame, int, error) {
	if len(b) < HeaderSize {
		return Frame{}, 0, ErrShort
	}
	t, n := FrameType(b[0]), binary.BigEndian.Uint32(b[1:HeaderSize])
	if err := checkHeader(t, n); err != nil {
		return Frame{}, 0, err
	}
	if uint32(len(b)-HeaderSize) < n {
		return Frame{}, 0, ErrShort
	}
	p := b[HeaderSize : HeaderSize+int(n)]
	f := Frame{Type: t}
	switch t {
	case FrameData:
		f.Data = p
	case FrameReset:
		kind, reason, err := decodeReset(p)
		if err != nil {
			return Frame{}, 0, err
		}
		f.Kind, f.Reason = kind, reason
	}
	return f, HeaderSize + int(n), nil
}

// errFIN is what frameReader returns when its source ends cleanly between
// two frames, before END or RESET.
var errFIN = errors.New("muxstream: stream closed by the peer without END")

// frameReader reads the frames of one direction and returns the DATA
// payloads as a byte stream. It reads payloads straight into the caller's
// buffer; only a RESET's payload (at most maxResetPayload bytes) is
// buffered. It survives an interrupted read of its source (a deadline) in
// the middle of a header or a RESET: the bytes read so far are kept.
//
// Its terminal results are sticky: io.EOF after END, a *ResetError after
// RESET, errFIN when the source ends between frames, a *DecodeError for a
// malformed frame, io.ErrUnexpectedEOF when the source ends inside a frame.
// Other errors of the source (deadlines) are returned as they are and the
// next Read goes on. It is not safe for concurrent use.
type frameReader struct {
	src io.Reader

	hdr    [HeaderSize]byte
	nhdr   int    // header bytes read
	remain uint32 // payload bytes of the current DATA frame not yet read
	reset  []byte // RESET payload read so far, while one is being read
	want   int    // RESET payload size
	err    error  // terminal result
}

func (r *frameReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch {
		case r.remain > 0:
			n, err := r.src.Read(p[:min(uint32(len(p)), r.remain)])
			r.remain -= uint32(n)
			if err == io.EOF {
				// A source that ended inside the frame is truncated; one
				// that ended right after it says so again on the next
				// read, as readers do.
				err = nil
				if r.remain > 0 {
					r.err = io.ErrUnexpectedEOF
				}
			}
			switch {
			case n > 0:
				return n, err // a terminal result comes with the next Read
			case r.err != nil:
				return 0, r.err
			case err != nil:
				return 0, err
			}
		case r.reset != nil:
			n, err := r.src.Read(r.reset[len(r.reset):r.want])
			r.reset = r.reset[:len(r.reset)+n]
			if len(r.reset) == r.want {
				kind, reason, derr := decodeReset(r.reset)
				if derr != nil {
					r.err = derr
				} else {
					r.err = &ResetError{Kind: kind, Reason: reason}
				}
				r.reset = nil
				return 0, r.err
			}
			if err == io.EOF {
				r.err = io.ErrUnexpectedEOF
				return 0, r.err
			}
			if err != nil {
				return 0, err
			}
		default:
			n, err := r.src.Read(r.hdr[r.nhdr:])
			r.nhdr += n
			if r.nhdr < HeaderSize {
				switch {
				case err == io.EOF && r.nhdr == 0:
					r.err = errFIN
					return 0, r.err
				case err == io.EOF:
					r.err = io.ErrUnexpectedEOF
					return 0, r.err
				case err != nil:
					return 0, err
				}
				continue
			}
			r.nhdr = 0
			t, size := FrameType(r.hdr[0]), binary.BigEndian.Uint32(r.hdr[1:])
			if err := checkHeader(t, size); err != nil {
				r.err = err
				return 0, r.err
			}
			switch t {
			case FrameData:
				r.remain = size
			case FrameEnd:
				r.err = io.EOF
				return 0, io.EOF
			case FrameReset:
				r.want = int(size)
				r.reset = make([]byte, 0, r.want)
			}
		}
	}
}

// ResetError is a session the peer aborted with a RESET frame.
type ResetError struct {
	Kind ResetKind
	// Reason is what the peer said, if anything; for ResetFailed, the
	// reason the gateway gives the user.
	Reason string
}

func (e *ResetError) Error() string {
	var what string
	switch e.Kind {
	case ResetFailed:
		return "muxstream: session failed: " + e.Reason
	case ResetCanceled:
		what = "muxstream: session canceled by the peer"
	default:
		what = "muxstream: session reset by the peer"
	}
	if e.Reason != "" {
		what += ": " + e.Reason
	}
	return what
}

// Is makes a session the peer aborted match syscall.ECONNRESET, as a TCP
// connection its peer reset does.
func (e *ResetError) Is(target error) bool {
	return e.Kind == ResetAborted && target == syscall.ECONNRESET
}

// Failure extracts the gateway's reason from an error that ended a
// stream: for a RESET of kind ResetFailed it returns the reason and true.
func Failure(err error) (string, bool) {
	var re *ResetError
	if errors.As(err, &re) && re.Kind == ResetFailed {
		return re.Reason, true
	}
	return "", false
}
