package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// readChecked reads one control message and checks its version, as a
// control loop does, returning the first error.
func readChecked(r *ControlReader) error {
	msg, err := r.ReadControl()
	if err == nil {
		err = CheckVersion(msg.ProtocolVersion())
	}
	return err
}

// TestClassifyControlStream classifies every error a control loop meets on
// one stream and checks that the reader keeps going after every class that
// says skip, and that a fatal one ends the stream.
func TestClassifyControlStream(t *testing.T) {
	var stream []byte
	stream = append(stream, unhex(t, "00 00 00 03 09 00 01")...)                                     // unknown tag 0x09
	stream = append(stream, unhex(t, "00 00 00 04 03 00 01 00")...)                                  // truncated HeartbeatAck
	stream = append(stream, unhex(t, "00 00 00 0C 03 00 01 00 00 00 00 00 00 00 05 FF")...)          // trailing byte
	stream = append(stream, unhex(t, "00 00 00 0F 02 00 02 00 00 00 00 00 00 00 01 00 00 00 00")...) // Heartbeat version 2
	stream, _ = (&Heartbeat{Version: 1, ActiveStreamCount: 3}).AppendFrame(stream)
	stream = append(stream, unhex(t, "00 10 00 01")...) // declares MaxControlPayload + 1

	r := NewControlReader(bytes.NewReader(stream))
	for i, want := range []ControlErrorClass{ControlUnknownTag, ControlMalformed, ControlMalformed, ControlBadVersion} {
		err := readChecked(r)
		if got := ClassifyControlError(err); got != want || !got.Skip() {
			t.Fatalf("frame %d: %v classified %v (skip %v), want %v", i, err, got, got.Skip(), want)
		}
	}
	if err := readChecked(r); err != nil {
		t.Fatalf("the reader did not go on after skipped frames: %v", err)
	}
	err := readChecked(r)
	if got := ClassifyControlError(err); got != ControlFatal || got.Skip() {
		t.Fatalf("%v classified %v, want fatal", err, got)
	}
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("err = %v, want ErrMessageTooLarge", err)
	}
}

func TestClassifyControlError(t *testing.T) {
	boom := errors.New("stream reset")
	unknown := &UnknownTagError{Stream: ControlStream, Message: "control message", Tag: 0x09}
	trunc := &TruncatedError{Field: "Heartbeat.timestamp_ms", Need: 8, Have: 1}
	invalid := &InvalidFieldError{Field: "Heartbeat", Reason: "1 trailing bytes after the message"}
	version := CheckVersion(2)
	tooLarge := &MessageTooLargeError{Stream: ControlStream, Size: MaxControlPayload + 1, Limit: MaxControlPayload}
	for _, tc := range []struct {
		name string
		err  error
		want ControlErrorClass
	}{
		{"unknown tag", unknown, ControlUnknownTag},
		{"unknown tag wrapped", fmt.Errorf("control: %w", unknown), ControlUnknownTag},
		{"truncated", trunc, ControlMalformed},
		{"invalid field", invalid, ControlMalformed},
		{"invalid field wrapped", fmt.Errorf("control: %w", invalid), ControlMalformed},
		{"bad version", version, ControlBadVersion},
		{"bad version wrapped", fmt.Errorf("control: %w", version), ControlBadVersion},
		{"too large", tooLarge, ControlFatal},
		{"end of stream", io.EOF, ControlFatal},
		{"end inside a frame", fmt.Errorf("dataplane: read control frame payload: %w", io.ErrUnexpectedEOF), ControlFatal},
		{"I/O error", fmt.Errorf("dataplane: read control frame header: %w", boom), ControlFatal},
		{"other error", boom, ControlFatal},
		{"nil", nil, ControlFatal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ClassifyControlError(tc.err)
			if got != tc.want {
				t.Errorf("ClassifyControlError(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if got.Skip() != (tc.want != ControlFatal) {
				t.Errorf("%v.Skip() = %v", got, got.Skip())
			}
		})
	}
}

func TestControlErrorClassString(t *testing.T) {
	for c, want := range map[ControlErrorClass]string{
		ControlFatal:         "fatal",
		ControlUnknownTag:    "unknown_tag",
		ControlMalformed:     "malformed",
		ControlBadVersion:    "bad_version",
		ControlErrorClass(9): "ControlErrorClass(9)",
	} {
		if got := c.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}
