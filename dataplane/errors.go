package dataplane

import (
	"errors"
	"strconv"
)

// Sentinels matched with errors.Is by the typed errors of this package.
// They are never returned bare.
var (
	// ErrUnsupportedVersion matches *UnsupportedVersionError.
	ErrUnsupportedVersion = errors.New("dataplane: unsupported protocol version")
	// ErrMessageTooLarge matches *MessageTooLargeError.
	ErrMessageTooLarge = errors.New("dataplane: message too large")
	// ErrTruncated matches *TruncatedError.
	ErrTruncated = errors.New("dataplane: truncated message")
	// ErrUnknownTag matches *UnknownTagError.
	ErrUnknownTag = errors.New("dataplane: unknown message tag")
	// ErrInvalidField matches *InvalidFieldError.
	ErrInvalidField = errors.New("dataplane: invalid field")
)

// UnsupportedVersionError reports a protocol version other than
// ProtocolVersion. CheckVersion returns it; decoders never do.
type UnsupportedVersionError struct {
	// Version is the version the peer sent.
	Version uint16
}

// Error returns "unsupported protocol version: N", without a package
// prefix: it is the exact reason text a session handler sends back in a
// ConnectResponse Error (DESIGN.md §2).
func (e *UnsupportedVersionError) Error() string {
	return "unsupported protocol version: " + strconv.Itoa(int(e.Version))
}

// Is reports whether target is ErrUnsupportedVersion.
func (e *UnsupportedVersionError) Is(target error) bool { return target == ErrUnsupportedVersion }

// MessageTooLargeError reports a payload over its stream's limit. On send,
// nothing was appended. On receive, the frame's payload was neither read nor
// allocated, so the stream is no longer in step and the reader is dead.
type MessageTooLargeError struct {
	// Stream is the stream kind whose limit applies.
	Stream StreamKind
	// Size is the payload length in bytes: the declared length on receive,
	// the encoded length on send.
	Size uint64
	// Limit is the stream's payload limit in bytes.
	Limit uint64
}

// Error describes the size and the limit.
func (e *MessageTooLargeError) Error() string {
	return "dataplane: " + e.Stream.String() + " message payload of " +
		strconv.FormatUint(e.Size, 10) + " bytes exceeds the limit of " +
		strconv.FormatUint(e.Limit, 10)
}

// Is reports whether target is ErrMessageTooLarge.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// TruncatedError reports a payload that ends before the message does, or a
// list count that the remaining bytes cannot hold (detected before the list
// is allocated).
type TruncatedError struct {
	// Field names what was being read, for example
	// "RouteAdvertise.subnets[3].prefix_len" or "RouteAdvertise.subnets"
	// (a count too large for the bytes left).
	Field string
	// Need is the number of bytes the field needs at least.
	Need uint64
	// Have is the number of bytes that were left.
	Have uint64
}

// Error names the field and the byte counts.
func (e *TruncatedError) Error() string {
	return "dataplane: truncated message: " + e.Field + " needs " +
		strconv.FormatUint(e.Need, 10) + " bytes, " +
		strconv.FormatUint(e.Have, 10) + " left"
}

// Is reports whether target is ErrTruncated.
func (e *TruncatedError) Is(target error) bool { return target == ErrTruncated }

// UnknownTagError reports a message tag this protocol version does not
// define. The frame was read completely, so a reader stays usable: DESIGN.md
// §2 has the control loop log an unknown control tag and read on.
type UnknownTagError struct {
	// Stream is where the tag was read.
	Stream StreamKind
	// Message is what was expected: "control message", "ConnectRequest" or
	// "ConnectResponse".
	Message string
	// Tag is the tag byte as received.
	Tag uint8
}

// Error names the tag, what was expected and the stream.
func (e *UnknownTagError) Error() string {
	return "dataplane: unknown " + e.Message + " tag " + hexByte(e.Tag) +
		" on " + e.Stream.String() + " stream"
}

// Is reports whether target is ErrUnknownTag.
func (e *UnknownTagError) Is(target error) bool { return target == ErrUnknownTag }

// InvalidFieldError reports a field whose value the protocol forbids:
// invalid UTF-8, a prefix length over 32, a malformed domain route, an
// unknown result byte, or trailing bytes after a complete message. Encoders
// return it for the same values, before appending anything.
type InvalidFieldError struct {
	// Field names the field, for example "RouteAdvertise.domains[0].name";
	// for trailing bytes it is the message name.
	Field string
	// Reason says what is wrong, for example "prefix length 33 > 32".
	Reason string
}

// Error names the field and the reason.
func (e *InvalidFieldError) Error() string {
	return "dataplane: invalid " + e.Field + ": " + e.Reason
}

// Is reports whether target is ErrInvalidField.
func (e *InvalidFieldError) Is(target error) bool { return target == ErrInvalidField }

// ControlErrorClass says what a control loop does with an error met on the
// control stream (DESIGN.md §2): an error of ControlReader.ReadControl, or
// of CheckVersion on the message it returned. The zero value is
// ControlFatal.
type ControlErrorClass uint8

// Control error classes.
const (
	// ControlFatal: the stream cannot go on. It ended (io.EOF), failed (an
	// I/O error, io.ErrUnexpectedEOF inside a frame) or is out of step
	// (*MessageTooLargeError); an error of none of this package's kinds is
	// fatal too. The reader is dead: the loop ends the connection.
	ControlFatal ControlErrorClass = iota
	// ControlUnknownTag: a whole frame with a tag this version does not
	// know (*UnknownTagError). The loop logs it and reads on.
	ControlUnknownTag
	// ControlMalformed: a whole frame whose payload is cut short or holds a
	// forbidden value (*TruncatedError, *InvalidFieldError). The loop logs
	// it and reads on.
	ControlMalformed
	// ControlBadVersion: a well-formed message of another protocol version
	// (*UnsupportedVersionError, from CheckVersion). The loop logs it and
	// ignores the message.
	ControlBadVersion
)

var controlErrorClassNames = [...]string{
	ControlFatal:      "fatal",
	ControlUnknownTag: "unknown_tag",
	ControlMalformed:  "malformed",
	ControlBadVersion: "bad_version",
}

// String returns "fatal", "unknown_tag", "malformed", "bad_version" or
// "ControlErrorClass(N)".
func (c ControlErrorClass) String() string {
	if int(c) < len(controlErrorClassNames) {
		return controlErrorClassNames[c]
	}
	return "ControlErrorClass(" + strconv.Itoa(int(c)) + ")"
}

// Skip reports whether a control loop logs an error of class c and goes on
// with the next message: true for every class but ControlFatal.
func (c ControlErrorClass) Skip() bool { return c != ControlFatal }

// ClassifyControlError returns the class of err, an error met reading the
// control stream or checking a control message's version; it matches
// wrapped errors too. Callers classify only non-nil errors (nil gives
// ControlFatal).
func ClassifyControlError(err error) ControlErrorClass {
	switch {
	case errors.Is(err, ErrUnknownTag):
		return ControlUnknownTag
	case errors.Is(err, ErrTruncated), errors.Is(err, ErrInvalidField):
		return ControlMalformed
	case errors.Is(err, ErrUnsupportedVersion):
		return ControlBadVersion
	}
	return ControlFatal
}
