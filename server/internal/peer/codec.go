package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/outposthq/outpost/dataplane"
)

// Wire constants of the peer protocol (see the package comment).
const (
	// ProtocolVersion is the only version of the peer protocol.
	ProtocolVersion = 1
	// MaxFramePayload is the largest payload of a peer frame, in bytes:
	// a Refused status with the longest reason.
	MaxFramePayload = headerLen + 1 + 2 + MaxReasonLen
	// MaxReasonLen caps a Refused status's reason, in bytes; a longer one
	// is cut on encode (at a rune boundary) and refused on decode.
	MaxReasonLen = 256

	frameHeaderLen = 4
	headerLen      = 3 // u8 tag, u16 version
	uuidLen        = 16
	forwardLen     = headerLen + 2*uuidLen
)

// Tag is the first byte of a peer frame's payload.
type Tag uint8

// The tags. Forward is the only frame the forwarding side sends; Accepted,
// Refused and Heard are the Status frames.
const (
	TagAccepted Tag = 0x00
	TagRefused  Tag = 0x01
	TagHeard    Tag = 0x02
	TagForward  Tag = 0x01
)

// Code says why a replica refused a forwarded session.
type Code uint8

// The refusal codes.
const (
	// CodeNotHere: the agent holds no connection to the replica.
	CodeNotHere Code = 0x01
	// CodeSessionLimit: the agent carries its maximum of sessions.
	CodeSessionLimit Code = 0x02
	// CodeBadRequest: the forwarded frames were malformed or disagree.
	CodeBadRequest Code = 0x03
	// CodeUnavailable: the replica could not open the agent's stream.
	CodeUnavailable Code = 0x04
)

func (c Code) String() string {
	switch c {
	case CodeNotHere:
		return "not-here"
	case CodeSessionLimit:
		return "session-limit"
	case CodeBadRequest:
		return "bad-request"
	case CodeUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Code(%#x)", uint8(c))
}

// Forward is the first frame on a peer stream: which agent the session is
// for.
//
// Payload layout:
//
//	u8        tag = 0x01
//	u16       version
//	[16]byte  agent_id (UUID, RFC 4122 byte order)
//	[16]byte  session_id
type Forward struct {
	Version   uint16
	AgentID   [uuidLen]byte
	SessionID dataplane.SessionID
}

// AppendFrame appends the framed Forward to dst.
func (f *Forward) AppendFrame(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, forwardLen)
	dst = append(dst, byte(TagForward))
	dst = binary.BigEndian.AppendUint16(dst, f.Version)
	dst = append(dst, f.AgentID[:]...)
	return append(dst, f.SessionID[:]...)
}

// DecodeForward decodes a Forward payload. It does not check the version.
func DecodeForward(p []byte) (Forward, error) {
	var f Forward
	if len(p) < headerLen {
		return f, &DecodeError{Field: "Forward.header", Reason: "truncated"}
	}
	if Tag(p[0]) != TagForward {
		return f, &DecodeError{Field: "Forward.tag", Reason: fmt.Sprintf("unknown tag %#02x", p[0])}
	}
	switch {
	case len(p) < forwardLen:
		return f, &DecodeError{Field: "Forward", Reason: fmt.Sprintf("truncated: %d bytes, want %d", len(p), forwardLen)}
	case len(p) > forwardLen:
		return f, &DecodeError{Field: "Forward", Reason: fmt.Sprintf("%d trailing bytes", len(p)-forwardLen)}
	}
	f.Version = binary.BigEndian.Uint16(p[1:])
	copy(f.AgentID[:], p[headerLen:])
	copy(f.SessionID[:], p[headerLen+uuidLen:])
	return f, nil
}

// Status is the receiving replica's answer to a Forward (Accepted or
// Refused), and, after Accepted, its word that the agent acknowledged the
// request (Heard).
//
// Payload layout:
//
//	Accepted: u8 tag = 0x00, u16 version
//	Refused:  u8 tag = 0x01, u16 version, u8 code, u16 length, UTF-8 reason
//	Heard:    u8 tag = 0x02, u16 version
//
// The zero value is an Accepted with version 0.
type Status struct {
	Version uint16
	// Refused and Heard are both false for Accepted; Code and Reason
	// belong to Refused, which wins when both are set.
	Refused bool
	Heard   bool
	Code    Code
	Reason  string
}

// AppendFrame appends the framed Status to dst. A reason longer than
// MaxReasonLen is cut; one that is not UTF-8 has its bad bytes replaced.
func (s *Status) AppendFrame(dst []byte) []byte {
	if !s.Refused {
		tag := TagAccepted
		if s.Heard {
			tag = TagHeard
		}
		dst = binary.BigEndian.AppendUint32(dst, headerLen)
		dst = append(dst, byte(tag))
		return binary.BigEndian.AppendUint16(dst, s.Version)
	}
	reason := cutReason(s.Reason)
	dst = binary.BigEndian.AppendUint32(dst, uint32(headerLen+1+2+len(reason)))
	dst = append(dst, byte(TagRefused))
	dst = binary.BigEndian.AppendUint16(dst, s.Version)
	dst = append(dst, byte(s.Code))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(reason)))
	return append(dst, reason...)
}

// cutReason makes r valid UTF-8 of at most MaxReasonLen bytes.
func cutReason(r string) string {
	if !utf8.ValidString(r) {
		r = string([]rune(r)) // replaces each bad byte with U+FFFD
	}
	if len(r) <= MaxReasonLen {
		return r
	}
	n := MaxReasonLen
	for n > 0 && !utf8.RuneStart(r[n]) {
		n--
	}
	return r[:n]
}

// DecodeStatus decodes a Status payload. It does not check the version.
// Reason is a copy.
func DecodeStatus(p []byte) (Status, error) {
	var s Status
	if len(p) < headerLen {
		return s, &DecodeError{Field: "Status.header", Reason: "truncated"}
	}
	s.Version = binary.BigEndian.Uint16(p[1:])
	rest := p[headerLen:]
	switch Tag(p[0]) {
	case TagAccepted, TagHeard:
		if len(rest) != 0 {
			return Status{}, &DecodeError{Field: "Status", Reason: fmt.Sprintf("%d trailing bytes", len(rest))}
		}
		s.Heard = Tag(p[0]) == TagHeard
		return s, nil
	case TagRefused:
	default:
		return Status{}, &DecodeError{Field: "Status.tag", Reason: fmt.Sprintf("unknown tag %#02x", p[0])}
	}
	if len(rest) < 3 {
		return Status{}, &DecodeError{Field: "Status.code", Reason: "truncated"}
	}
	s.Refused, s.Code = true, Code(rest[0])
	n := int(binary.BigEndian.Uint16(rest[1:]))
	rest = rest[3:]
	switch {
	case n > MaxReasonLen:
		return Status{}, &DecodeError{Field: "Status.reason", Reason: fmt.Sprintf("%d bytes, limit %d", n, MaxReasonLen)}
	case n > len(rest):
		return Status{}, &DecodeError{Field: "Status.reason", Reason: "truncated"}
	case n < len(rest):
		return Status{}, &DecodeError{Field: "Status", Reason: fmt.Sprintf("%d trailing bytes", len(rest)-n)}
	case !utf8.Valid(rest):
		return Status{}, &DecodeError{Field: "Status.reason", Reason: "not UTF-8"}
	}
	s.Reason = string(rest)
	return s, nil
}

// DecodeError is a malformed peer frame: Field names what, Reason why.
type DecodeError struct{ Field, Reason string }

func (e *DecodeError) Error() string { return "peer: " + e.Field + ": " + e.Reason }

// ErrFrameTooLarge is a frame whose declared length exceeds
// MaxFramePayload; nothing of its payload was read.
var ErrFrameTooLarge = errors.New("peer: frame larger than the limit")

// ErrVersion is a frame of another protocol version.
var ErrVersion = errors.New("peer: unsupported protocol version")

// readFrame reads one frame from r into buf (at least MaxFramePayload
// bytes) and returns its payload, which aliases buf. The length is checked
// before the payload is read. A stream that ends before the first byte is
// io.EOF, inside the frame io.ErrUnexpectedEOF; larger frames are
// ErrFrameTooLarge.
func readFrame(r io.Reader, buf *[MaxFramePayload]byte) ([]byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFramePayload {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFramePayload)
	}
	p := buf[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return p, nil
}

// ReadForward reads and decodes one Forward frame from r and checks its
// version (ErrVersion, wrapped).
func ReadForward(r io.Reader) (Forward, error) {
	return readMessage(r, DecodeForward, func(f Forward) uint16 { return f.Version })
}

// ReadStatus reads and decodes one Status frame from r and checks its
// version (ErrVersion, wrapped).
func ReadStatus(r io.Reader) (Status, error) {
	return readMessage(r, DecodeStatus, func(s Status) uint16 { return s.Version })
}

// readMessage reads one frame from r, decodes it and checks its version.
func readMessage[M any](r io.Reader, decode func([]byte) (M, error), version func(M) uint16) (M, error) {
	var buf [MaxFramePayload]byte
	var m M
	p, err := readFrame(r, &buf)
	if err != nil {
		return m, err
	}
	m, err = decode(p)
	if err == nil && version(m) != ProtocolVersion {
		err = fmt.Errorf("%w: %d", ErrVersion, version(m))
	}
	return m, err
}
