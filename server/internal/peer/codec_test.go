package peer

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/outposthq/outpost/dataplane"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	goldenAgent   = [16]byte{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x4a, 0x6b, 0x8c, 0x7d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3}
	goldenSession = dataplane.SessionID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
)

// Golden frames, byte for byte.
const (
	goldenForward = "00 00 00 23 01 00 01" +
		" 0A 1B 2C 3D 4E 5F 4A 6B 8C 7D 8E 9F A0 B1 C2 D3" +
		" 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10"
	goldenAccepted = "00 00 00 03 00 00 01"
	goldenRefused  = "00 00 00 0B 01 00 01 01 00 05 67 6F 6E 65 21" // not-here, "gone!"
	goldenHeard    = "00 00 00 03 02 00 01"
)

func TestGoldenFrames(t *testing.T) {
	f := Forward{Version: ProtocolVersion, AgentID: goldenAgent, SessionID: goldenSession}
	if got, want := f.AppendFrame(nil), unhex(t, goldenForward); !bytes.Equal(got, want) {
		t.Errorf("Forward = % X\nwant      % X", got, want)
	}
	acc := Status{Version: ProtocolVersion}
	if got, want := acc.AppendFrame(nil), unhex(t, goldenAccepted); !bytes.Equal(got, want) {
		t.Errorf("Accepted = % X, want % X", got, want)
	}
	ref := Status{Version: ProtocolVersion, Refused: true, Code: CodeNotHere, Reason: "gone!"}
	if got, want := ref.AppendFrame(nil), unhex(t, goldenRefused); !bytes.Equal(got, want) {
		t.Errorf("Refused = % X, want % X", got, want)
	}

	heard := Status{Version: ProtocolVersion, Heard: true}
	if got, want := heard.AppendFrame(nil), unhex(t, goldenHeard); !bytes.Equal(got, want) {
		t.Errorf("Heard = % X, want % X", got, want)
	}

	gotF, err := ReadForward(bytes.NewReader(unhex(t, goldenForward)))
	if err != nil || gotF != f {
		t.Errorf("ReadForward = %+v, %v", gotF, err)
	}
	for _, want := range []Status{acc, ref, heard} {
		got, err := ReadStatus(bytes.NewReader(want.AppendFrame(nil)))
		if err != nil || got != want {
			t.Errorf("ReadStatus = %+v, %v; want %+v", got, err, want)
		}
	}
}

// Every truncation of a payload is a *DecodeError, never a panic or a
// message.
func TestTruncated(t *testing.T) {
	for name, frame := range map[string]string{"Forward": goldenForward, "Refused": goldenRefused, "Accepted": goldenAccepted, "Heard": goldenHeard} {
		p := unhex(t, frame)[frameHeaderLen:]
		for n := range len(p) {
			var err error
			if name == "Forward" {
				_, err = DecodeForward(p[:n])
			} else {
				_, err = DecodeStatus(p[:n])
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Errorf("%s cut at %d: %v, want a *DecodeError", name, n, err)
			}
		}
		// Inside the frame on the stream: io.ErrUnexpectedEOF; before it: io.EOF.
		full := unhex(t, frame)
		for n := 1; n < len(full); n++ {
			if _, err := ReadStatus(bytes.NewReader(full[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s stream cut at %d: %v, want io.ErrUnexpectedEOF", name, n, err)
			}
		}
	}
	if _, err := ReadForward(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
}

func TestMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		payload string
		forward bool
		field   string
	}{
		"forward unknown tag":   {payload: "02 00 01" + strings.Repeat(" 00", 32), forward: true, field: "Forward.tag"},
		"forward trailing byte": {payload: "01 00 01" + strings.Repeat(" 00", 33), forward: true, field: "Forward"},
		"status unknown tag":    {payload: "03 00 01", field: "Status.tag"},
		"accepted trailing":     {payload: "00 00 01 00", field: "Status"},
		"heard trailing":        {payload: "02 00 01 00", field: "Status"},
		"refused trailing":      {payload: "01 00 01 01 00 01 41 42", field: "Status"},
		"refused reason cut":    {payload: "01 00 01 01 00 02 41", field: "Status.reason"},
		"refused bad UTF-8":     {payload: "01 00 01 01 00 02 C3 28", field: "Status.reason"},
	} {
		var err error
		if tc.forward {
			_, err = DecodeForward(unhex(t, tc.payload))
		} else {
			_, err = DecodeStatus(unhex(t, tc.payload))
		}
		var de *DecodeError
		if !errors.As(err, &de) || de.Field != tc.field {
			t.Errorf("%s: %v, want a *DecodeError on %s", name, err, tc.field)
		}
	}
	// The version is the readers' check, not the decoders'.
	if _, err := ReadForward(bytes.NewReader(unhex(t, "00 00 00 23 01 00 02"+strings.Repeat(" 00", 32)))); !errors.Is(err, ErrVersion) {
		t.Errorf("Forward version 2: %v, want ErrVersion", err)
	}
	if _, err := ReadStatus(bytes.NewReader(unhex(t, "00 00 00 03 00 00 00"))); !errors.Is(err, ErrVersion) {
		t.Errorf("Status version 0: %v, want ErrVersion", err)
	}
}

// failAfter is a reader that fails the test if more than n bytes are read.
type failAfter struct {
	t *testing.T
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		f.t.Fatal("read past the limit check")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// The frame limit: MaxFramePayload is read, one byte more is refused from
// the 4-byte header alone. The reason limit: MaxReasonLen decodes, one
// more is refused, and the encoder cuts longer reasons to it.
func TestLimits(t *testing.T) {
	at := make([]byte, frameHeaderLen+MaxFramePayload)
	binary.BigEndian.PutUint32(at, MaxFramePayload)
	var buf [MaxFramePayload]byte
	if p, err := readFrame(bytes.NewReader(at), &buf); err != nil || len(p) != MaxFramePayload {
		t.Errorf("a frame at the limit: %d bytes, %v", len(p), err)
	}
	over := binary.BigEndian.AppendUint32(nil, MaxFramePayload+1)
	if _, err := readFrame(&failAfter{t: t, r: io.MultiReader(bytes.NewReader(over), strings.NewReader(strings.Repeat("x", 1000))), n: 4}, &buf); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("a frame one byte over: %v, want ErrFrameTooLarge", err)
	}

	full := Status{Version: ProtocolVersion, Refused: true, Code: CodeUnavailable, Reason: strings.Repeat("r", MaxReasonLen)}
	frame := full.AppendFrame(nil)
	if len(frame) != frameHeaderLen+MaxFramePayload {
		t.Errorf("the longest Refused is %d bytes, want the frame limit %d", len(frame), frameHeaderLen+MaxFramePayload)
	}
	if got, err := ReadStatus(bytes.NewReader(frame)); err != nil || got != full {
		t.Errorf("reason at the limit: %+v, %v", got, err)
	}
	p := binary.BigEndian.AppendUint16(bytes.Clone(frame[frameHeaderLen:frameHeaderLen+4]), MaxReasonLen+1)
	p = append(p, strings.Repeat("r", MaxReasonLen+1)...)
	var de *DecodeError
	if _, err := DecodeStatus(p); !errors.As(err, &de) || de.Field != "Status.reason" {
		t.Errorf("reason one byte over: %v, want a *DecodeError on Status.reason", err)
	}
	long := Status{Version: ProtocolVersion, Refused: true, Code: CodeUnavailable, Reason: strings.Repeat("r", MaxReasonLen-1) + "é"}
	got, err := ReadStatus(bytes.NewReader(long.AppendFrame(nil)))
	if err != nil || got.Reason != strings.Repeat("r", MaxReasonLen-1) {
		t.Errorf("a reason cut inside a rune: %q, %v", got.Reason, err)
	}
	bad := Status{Version: ProtocolVersion, Refused: true, Reason: "a\xffb"}
	if got, err := ReadStatus(bytes.NewReader(bad.AppendFrame(nil))); err != nil || got.Reason != "a\uFFFDb" {
		t.Errorf("a reason that is not UTF-8: %q, %v", got.Reason, err)
	}
}

func TestCodeString(t *testing.T) {
	for c, want := range map[Code]string{CodeNotHere: "not-here", CodeSessionLimit: "session-limit",
		CodeBadRequest: "bad-request", CodeUnavailable: "unavailable", 0x7f: "Code(0x7f)"} {
		if c.String() != want {
			t.Errorf("%d: %q, want %q", c, c.String(), want)
		}
	}
}

func BenchmarkForward(b *testing.B) {
	f := Forward{Version: ProtocolVersion, AgentID: goldenAgent, SessionID: goldenSession}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.AppendFrame(buf[:0])
		if _, err := DecodeForward(buf[frameHeaderLen:]); err != nil {
			b.Fatal(err)
		}
	}
}
