// Package dataplane holds what the gateway and the agent share about the
// QUIC data plane: protocol v1 framing, the control and session messages,
// the protocol version and the ALPN name (DESIGN.md §2; the byte tables are
// in PROTOCOL.md next to this file).
//
// The codec imports only the standard library. Every message is a plain Go
// struct. Encoders append one framed message ([u32 length][payload]) to a
// caller's buffer: they validate first, check the stream's size limit, and
// append nothing when either fails. Readers read exactly one frame at a time
// from an io.Reader into a buffer they reuse, never reading past the frame,
// so a session stream can be handed to a raw byte copy right after its
// ConnectRequest or ConnectResponse. The Decode functions decode a payload
// (a frame without its length prefix) and are what the fuzz targets drive.
//
// Decoding is strict and bounded: a frame's declared length is checked
// against the stream's limit before anything is allocated or read, a list
// count is checked against the bytes left before its slice is allocated,
// and trailing bytes, invalid UTF-8, prefix lengths over 32, unknown tags
// and malformed domain routes are errors. Decoders check structure only;
// the protocol version is returned as sent, and handlers call CheckVersion.
//
// Aliasing: decoded strings and slices never alias the payload or the
// reader's buffer (they are copied). A message returned by
// ControlReader.ReadControl is reused by the next call (see there); a
// value copy of it is independent.
//
// Errors: *UnsupportedVersionError, *MessageTooLargeError, *TruncatedError,
// *UnknownTagError and *InvalidFieldError, each matching its sentinel
// (ErrUnsupportedVersion, ErrMessageTooLarge, ErrTruncated, ErrUnknownTag,
// ErrInvalidField) with errors.Is; I/O errors from readers are wrapped, except
// a clean end of stream before a frame starts, which is io.EOF itself.
package dataplane
