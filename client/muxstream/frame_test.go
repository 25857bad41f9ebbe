package muxstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// golden are exact encodings, written out by hand from the format in the
// package comment.
var golden = []struct {
	name  string
	frame Frame
	bytes []byte
}{
	{"data", Frame{Type: FrameData, Data: []byte("hi")}, []byte{0x00, 0, 0, 0, 2, 'h', 'i'}},
	{"end", Frame{Type: FrameEnd}, []byte{0x01, 0, 0, 0, 0}},
	{"reset aborted", Frame{Type: FrameReset, Kind: ResetAborted}, []byte{0x02, 0, 0, 0, 1, 0x01}},
	{"reset canceled", Frame{Type: FrameReset, Kind: ResetCanceled}, []byte{0x02, 0, 0, 0, 1, 0x02}},
	{"reset failed", Frame{Type: FrameReset, Kind: ResetFailed, Reason: "no"}, []byte{0x02, 0, 0, 0, 3, 0x03, 'n', 'o'}},
	{"reset failed utf-8", Frame{Type: FrameReset, Kind: ResetFailed, Reason: "é"}, []byte{0x02, 0, 0, 0, 3, 0x03, 0xc3, 0xa9}},
}

func TestGolden(t *testing.T) {
	for _, g := range golden {
		got, err := AppendFrame(nil, g.frame)
		if err != nil || !bytes.Equal(got, g.bytes) {
			t.Errorf("%s: encoded % x, %v; want % x", g.name, got, err, g.bytes)
		}
		f, n, err := DecodeFrame(append(g.bytes, 0xff)) // a trailing byte is the next frame's
		if err != nil || n != len(g.bytes) || f.Type != g.frame.Type || !bytes.Equal(f.Data, g.frame.Data) ||
			f.Kind != g.frame.Kind || f.Reason != g.frame.Reason {
			t.Errorf("%s: decoded %+v, %d, %v", g.name, f, n, err)
		}
		// Every truncation is short, never an error or a frame.
		for i := range len(g.bytes) {
			if _, _, err := DecodeFrame(g.bytes[:i]); err != ErrShort {
				t.Errorf("%s cut to %d bytes: %v, want ErrShort", g.name, i, err)
			}
		}
	}
}

// header returns a frame header declaring n payload bytes.
func header(t FrameType, n uint32) []byte {
	return appendHeader(nil, t, int(n))
}

func TestDecodeLimits(t *testing.T) {
	full := func(typ FrameType, n uint32, payload byte) []byte {
		return append(header(typ, n), bytes.Repeat([]byte{payload}, int(n))...)
	}
	cases := []struct {
		name  string
		b     []byte
		field string // "" when the frame is valid
	}{
		{"data max", full(FrameData, MaxData, 'x'), ""},
		{"data max+1", header(FrameData, MaxData+1), "length"},
		{"data empty", header(FrameData, 0), "length"},
		{"data 4 GiB", header(FrameData, 1<<32-1), "length"},
		{"end with payload", full(FrameEnd, 1, 0), "length"},
		{"reset max", full(FrameReset, maxResetPayload, 'r'), ""},
		{"reset max+1", header(FrameReset, maxResetPayload+1), "length"},
		{"reset empty", header(FrameReset, 0), "length"},
		{"reset bad utf-8", append(header(FrameReset, 2), byte(ResetFailed), 0xff), "reason"},
		{"unknown type", header(0x03, 0), "type"},
		{"unknown type 0xff", header(0xff, 0), "type"},
	}
	for _, tc := range cases {
		_, n, err := DecodeFrame(tc.b)
		var de *DecodeError
		switch {
		case tc.field == "" && (err != nil || n != len(tc.b)):
			t.Errorf("%s: %d, %v", tc.name, n, err)
		case tc.field != "" && (!errors.As(err, &de) || de.Field != tc.field):
			t.Errorf("%s: %v, want a DecodeError on %s", tc.name, err, tc.field)
		}
		// The streaming reader agrees, and never reads a refused payload.
		r := &frameReader{src: bytes.NewReader(tc.b)}
		_, _ = io.Copy(io.Discard, r)
		if tc.field != "" && (!errors.As(r.err, &de) || de.Field != tc.field) {
			t.Errorf("%s: streaming: %v, want a DecodeError on %s", tc.name, r.err, tc.field)
		}
		if tc.field == "" && errors.As(r.err, &de) {
			t.Errorf("%s: streaming: %v", tc.name, r.err)
		}
	}
}

func TestAppendLimits(t *testing.T) {
	if _, err := AppendData(nil, nil); err == nil {
		t.Error("empty DATA encoded")
	}
	if _, err := AppendData(nil, make([]byte, MaxData+1)); err == nil {
		t.Error("DATA over MaxData encoded")
	}
	if b, err := AppendData(nil, make([]byte, MaxData)); err != nil || len(b) != HeaderSize+MaxData {
		t.Errorf("DATA of MaxData: %d bytes, %v", len(b), err)
	}
	if _, err := AppendFrame(nil, Frame{Type: 7}); err == nil {
		t.Error("unknown type encoded")
	}
	// A long reason is cut on a character boundary, a bad one repaired.
	long := strings.Repeat("é", MaxReason)
	f, _, err := DecodeFrame(AppendReset(nil, ResetFailed, long))
	if err != nil || len(f.Reason) != MaxReason || !strings.HasPrefix(long, f.Reason) {
		t.Errorf("long reason: %d bytes, %v", len(f.Reason), err)
	}
	f, _, err = DecodeFrame(AppendReset(nil, ResetFailed, "x"+long))
	if err != nil || len(f.Reason) != MaxReason-1 || !strings.HasPrefix("x"+long, f.Reason) {
		t.Errorf("long reason cut inside a character: %d bytes, %v", len(f.Reason), err)
	}
	f, _, err = DecodeFrame(AppendReset(nil, ResetFailed, "a\xffb"))
	if err != nil || f.Reason != "a\uFFFDb" {
		t.Errorf("bad UTF-8 reason: %q, %v", f.Reason, err)
	}
}

// frames is a sequence with every frame type.
func frames(t *testing.T) []byte {
	var b []byte
	for _, p := range []string{"hello, ", "world", strings.Repeat("z", 3000)} {
		b, _ = AppendData(b, []byte(p))
	}
	return b
}

// The streaming reader gives the DATA payloads as one byte stream, in
// reads of any size, then the direction's end.
func TestFrameReader(t *testing.T) {
	data := "hello, world" + strings.Repeat("z", 3000)
	for _, tc := range []struct {
		name string
		tail []byte
		want error
	}{
		{"end", AppendEnd(nil), io.EOF},
		{"reset", AppendReset(nil, ResetFailed, "nope"), &ResetError{Kind: ResetFailed, Reason: "nope"}},
		{"reset after end", append(AppendEnd(nil), AppendReset(nil, ResetAborted, "")...), io.EOF},
		{"fin", nil, errFIN},
		{"cut header", AppendEnd(nil)[:3], io.ErrUnexpectedEOF},
		{"cut data", []byte{0, 0, 0, 0, 9, 'a'}, io.ErrUnexpectedEOF},
		{"cut reset", AppendReset(nil, ResetFailed, "nope")[:7], io.ErrUnexpectedEOF},
	} {
		for _, mode := range []string{"whole", "one byte", "data err", "timeouts"} {
			in := append(frames(t), tc.tail...)
			var src io.Reader = bytes.NewReader(in)
			switch mode {
			case "one byte":
				src = iotest.OneByteReader(src)
			case "data err":
				src = iotest.DataErrReader(src)
			case "timeouts":
				src = &flaky{r: iotest.OneByteReader(src)}
			}
			r := &frameReader{src: src}
			var got []byte
			buf := make([]byte, 7)
			var err error
			for {
				var n int
				n, err = r.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil && !isTimeout(err) {
					break
				}
			}
			wantData := data
			if tc.name == "cut data" {
				wantData += "a"
			}
			if string(got) != wantData {
				t.Errorf("%s, %s: read %d bytes, want %d", tc.name, mode, len(got), len(wantData))
			}
			var re, wre *ResetError
			switch {
			case errors.As(tc.want, &wre):
				if !errors.As(err, &re) || *re != *wre {
					t.Errorf("%s, %s: %v, want %v", tc.name, mode, err, tc.want)
				}
			case err != tc.want:
				t.Errorf("%s, %s: %v, want %v", tc.name, mode, err, tc.want)
			}
			// The end is sticky.
			if _, again := r.Read(buf); again != err {
				t.Errorf("%s, %s: then %v", tc.name, mode, again)
			}
		}
	}
}

// flaky fails every other read with a timeout, as a read deadline would.
type flaky struct {
	r    io.Reader
	fail bool
}

func (f *flaky) Read(p []byte) (int, error) {
	f.fail = !f.fail
	if f.fail {
		return 0, timeoutError{}
	}
	return f.r.Read(p)
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestResetError(t *testing.T) {
	if r, ok := Failure(&ResetError{Kind: ResetFailed, Reason: "why"}); !ok || r != "why" {
		t.Errorf("Failure: %q %v", r, ok)
	}
	if _, ok := Failure(&ResetError{Kind: ResetAborted}); ok {
		t.Error("an aborted stream is no failure with a reason")
	}
	if _, ok := Failure(io.EOF); ok {
		t.Error("io.EOF is no failure")
	}
	for _, tc := range []struct {
		e    ResetError
		want string
	}{
		{ResetError{Kind: ResetFailed, Reason: "why"}, "session failed: why"},
		{ResetError{Kind: ResetAborted}, "session reset by the peer"},
		{ResetError{Kind: ResetCanceled, Reason: "shutdown"}, "session canceled by the peer: shutdown"},
		{ResetError{Kind: 0x7f}, "session reset by the peer"},
	} {
		if got := tc.e.Error(); !strings.HasSuffix(got, tc.want) {
			t.Errorf("%+v: %q, want …%q", tc.e, got, tc.want)
		}
	}
	if FrameType(9).String() != "FrameType(0x09)" || FrameReset.String() != "RESET" {
		t.Error("FrameType.String")
	}
}
