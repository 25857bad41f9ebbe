package dataplane

import (
	"encoding/hex"
	"strconv"
)

// ProtocolVersion is the protocol version this package speaks. It is the
// only version a handler accepts (see CheckVersion); encoders write whatever
// version a message carries, so set a message's Version to this constant.
const ProtocolVersion uint16 = 1

// ALPN is the TLS application protocol both ends negotiate on the QUIC
// connection.
const ALPN = "gw-agent-tunnel/1"

// Frame layout and size limits.
const (
	// FrameHeaderLen is the length of the u32 big-endian payload length that
	// starts every frame. The length excludes these four bytes.
	FrameHeaderLen = 4

	// MaxControlPayload is the largest payload, in bytes, of a frame on the
	// control stream (1 MiB). A payload of exactly this size is allowed.
	MaxControlPayload = 1 << 20

	// MaxSessionPayload is the largest payload, in bytes, of a frame on a
	// session stream (64 KiB). A payload of exactly this size is allowed.
	MaxSessionPayload = 1 << 16
)

// CheckVersion returns nil if v is ProtocolVersion and an
// *UnsupportedVersionError otherwise. Decoders do not call it: handlers do,
// so that they can answer a wrong version the way DESIGN.md §2 says (log and
// ignore on the control stream, ConnectResponse Error on a session stream).
func CheckVersion(v uint16) error {
	if v != ProtocolVersion {
		return &UnsupportedVersionError{Version: v}
	}
	return nil
}

// StreamKind tells which kind of QUIC stream a frame travels on, which sets
// its size limit and how its first payload byte is read. The zero value is
// ControlStream.
type StreamKind uint8

// Stream kinds.
const (
	// ControlStream is the agent's first bidirectional stream, carrying
	// control messages; payload limit MaxControlPayload.
	ControlStream StreamKind = iota
	// SessionStream is a per-session stream, carrying one ConnectRequest and
	// one ConnectResponse before raw bytes; payload limit MaxSessionPayload.
	SessionStream
)

// String returns "control", "session" or "StreamKind(N)".
func (k StreamKind) String() string {
	switch k {
	case ControlStream:
		return "control"
	case SessionStream:
		return "session"
	}
	return "StreamKind(" + strconv.Itoa(int(k)) + ")"
}

// limit returns the payload limit of the stream kind.
func (k StreamKind) limit() uint64 {
	if k == SessionStream {
		return MaxSessionPayload
	}
	return MaxControlPayload
}

// MessageTag is the first payload byte of a control message, naming its
// type. Session messages have their own tags (ConnectRequest TCP is 0x01,
// ConnectResponse Success/Error are 0x00/0x01), which overlap with these
// and are therefore not MessageTags.
type MessageTag uint8

// Control message tags.
const (
	TagRouteAdvertise      MessageTag = 0x01 // agent→gateway
	TagHeartbeat           MessageTag = 0x02 // agent→gateway
	TagHeartbeatAck        MessageTag = 0x03 // gateway→agent
	TagCertRenewalRequest  MessageTag = 0x04 // agent→gateway
	TagCertRenewalResponse MessageTag = 0x05 // gateway→agent
)

var messageTagNames = [...]string{
	TagRouteAdvertise:      "RouteAdvertise",
	TagHeartbeat:           "Heartbeat",
	TagHeartbeatAck:        "HeartbeatAck",
	TagCertRenewalRequest:  "CertRenewalRequest",
	TagCertRenewalResponse: "CertRenewalResponse",
}

// String returns the message name ("Heartbeat") or "MessageTag(0xNN)" for a
// tag this version does not know.
func (t MessageTag) String() string {
	if int(t) < len(messageTagNames) && messageTagNames[t] != "" {
		return messageTagNames[t]
	}
	return "MessageTag(" + hexByte(uint8(t)) + ")"
}

// Result is the outcome byte of a CertRenewalResponse and the tag of a
// ConnectResponse. The zero value is ResultSuccess.
type Result uint8

// Results.
const (
	ResultSuccess Result = 0x00
	ResultError   Result = 0x01
)

// String returns "Success", "Error" or "Result(0xNN)".
func (r Result) String() string {
	switch r {
	case ResultSuccess:
		return "Success"
	case ResultError:
		return "Error"
	}
	return "Result(" + hexByte(uint8(r)) + ")"
}

// SessionID identifies a session: a UUID whose 16 bytes are in RFC 4122
// textual order, exactly as on the wire. It converts to and from other
// [16]byte UUID types. The zero value is the nil UUID.
type SessionID [16]byte

// String returns the UUID in its lowercase, hyphenated RFC 4122 form
// (00112233-4455-6677-8899-aabbccddeeff).
func (id SessionID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}

// hexByte formats b as 0xNN.
func hexByte(b uint8) string {
	const digits = "0123456789abcdef"
	return string([]byte{'0', 'x', digits[b>>4], digits[b&0x0f]})
}
