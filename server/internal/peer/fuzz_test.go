package peer

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/fuzzcorpus"
)

// fuzzSeeds are the seed payloads of each fuzz target, by file name: the
// golden frames' payloads plus malformed ones.
func fuzzSeeds(t testing.TB) fuzzcorpus.Seeds {
	payload := func(frame string) []any { return []any{unhex(t, frame)[frameHeaderLen:]} }
	raw := func(s string) []any { return []any{unhex(t, s)} }
	return fuzzcorpus.Seeds{
		"FuzzForward": {
			"golden":        payload(goldenForward),
			"unknown-tag":   raw("02 00 01"),
			"trailing-byte": raw("01 00 01" + strings.Repeat(" 00", 33)),
			"truncated":     raw("01 00 01 0A 1B"),
		},
		"FuzzStatus": {
			"golden-accepted": payload(goldenAccepted),
			"golden-refused":  payload(goldenRefused),
			"golden-heard":    payload(goldenHeard),
			"reason-too-long": raw("01 00 01 04 01 01"),
			"bad-utf8":        raw("01 00 01 01 00 02 C3 28"),
			"unknown-tag":     raw("05 00 01"),
		},
	}
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) { fuzzcorpus.Check(t, "testdata/fuzz", fuzzSeeds(t)) }

// checkDecodeError fails unless err is a well-formed *DecodeError.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) || de.Field == "" || de.Reason == "" {
		t.Fatalf("decoder returned %T %v", err, err)
	}
}

// Decode → encode → decode: a decoded Forward re-encodes to the same
// payload.
func FuzzForward(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeForward(payload)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		frame := m.AppendFrame(nil)
		if !bytes.Equal(frame[frameHeaderLen:], payload) {
			t.Fatalf("re-encoded % X, decoded from % X", frame[frameHeaderLen:], payload)
		}
		again, err := ReadForward(bytes.NewReader(frame))
		if (err == nil) != (m.Version == ProtocolVersion) || err == nil && again != m {
			t.Fatalf("read back %+v, %v; want %+v", again, err, m)
		}
	})
}

// Decode → encode → decode: a decoded Status re-encodes to the same
// payload.
func FuzzStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeStatus(payload)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		frame := m.AppendFrame(nil)
		if len(frame)-frameHeaderLen > MaxFramePayload {
			t.Fatalf("a decoded Status encodes to %d bytes, over the limit", len(frame)-frameHeaderLen)
		}
		if !bytes.Equal(frame[frameHeaderLen:], payload) {
			t.Fatalf("re-encoded % X, decoded from % X", frame[frameHeaderLen:], payload)
		}
		again, err := ReadStatus(bytes.NewReader(frame))
		if (err == nil) != (m.Version == ProtocolVersion) || err == nil && again != m {
			t.Fatalf("read back %+v, %v; want %+v", again, err, m)
		}
	})
}
