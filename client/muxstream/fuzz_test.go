package muxstream

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/fuzzcorpus"
)

// chunked reads from b in reads of at most n bytes (n ≥ 1).
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

// frameSeeds are FuzzFrames' inputs, by corpus file name: bytes of a
// direction, and the chunk size the streaming reader gets them in.
func frameSeeds() map[string][]any {
	s := map[string][]any{}
	for _, g := range golden {
		s[strings.ReplaceAll(g.name, " ", "-")] = []any{g.bytes, uint8(1)}
	}
	seq, _ := AppendData(nil, []byte("hello"))
	seq, _ = AppendData(seq, bytes.Repeat([]byte{0xAB}, 300))
	s["data-then-end"] = []any{AppendEnd(seq), uint8(7)}
	s["data-then-reset"] = []any{AppendReset(seq, ResetFailed, "agent office refused connection"), uint8(64)}
	s["end-then-reset"] = []any{AppendReset(AppendEnd(nil), ResetAborted, ""), uint8(3)}
	s["truncated"] = []any{seq[:len(seq)-1], uint8(5)}
	s["data-too-long"] = []any{header(FrameData, MaxData+1), uint8(2)}
	s["end-with-payload"] = []any{append(header(FrameEnd, 1), 0), uint8(1)}
	s["bad-utf-8"] = []any{append(header(FrameReset, 2), byte(ResetFailed), 0xff), uint8(4)}
	s["unknown-type"] = []any{header(0x09, 0), uint8(9)}
	s["empty"] = []any{[]byte{}, uint8(1)}
	return s
}

// guardSeeds are FuzzGuard's inputs: yamux bytes and a chunk size.
func guardSeeds() map[string][]any {
	var pings []byte
	for i := range PingBurst + 2 {
		pings = append(pings, ping(uint32(i))...)
	}
	data := yamuxFrame(yamuxTypeData, 1, 1, 24, append(ping(1), ping(2)...))
	return map[string][]any{
		"ping-flood":        {pings, uint8(5)},
		"data-hiding-pings": {data, uint8(1)},
		"window-update":     {yamuxFrame(1, 1, 1, 1<<20, nil), uint8(12)},
		"go-away":           {yamuxFrame(3, 0, 0, 0, nil), uint8(13)},
		"cut-header":        {ping(1)[:7], uint8(2)},
	}
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz"), fuzzcorpus.Seeds{
		"FuzzFrames": frameSeeds(),
		"FuzzGuard":  guardSeeds(),
	})
}

// FuzzFrames decodes a direction's bytes whole (DecodeFrame) and streamed
// in chunks (frameReader) and checks that both agree on the data and the
// end, that re-encoding the decoded frames gives the bytes back, and that
// nothing panics.
func FuzzFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s[0].([]byte), s[1].(uint8))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		// Whole.
		var data, again []byte
		var end error
		rest := in
		for end == nil {
			fr, n, err := DecodeFrame(rest)
			if err != nil {
				end = err
				break
			}
			enc, eerr := AppendFrame(nil, fr)
			if eerr != nil || !bytes.Equal(enc, rest[:n]) {
				t.Fatalf("frame %+v re-encodes to % x, %v; was % x", fr, enc, eerr, rest[:n])
			}
			again = append(again, enc...)
			rest = rest[n:]
			switch fr.Type {
			case FrameData:
				data = append(data, fr.Data...)
			case FrameEnd:
				end = io.EOF
			case FrameReset:
				end = &ResetError{Kind: fr.Kind, Reason: fr.Reason}
			}
		}
		if !bytes.Equal(again, in[:len(again)]) {
			t.Fatal("re-encoded frames differ from the input")
		}

		// Streamed.
		r := &frameReader{src: &chunked{b: in, n: int(chunk%64) + 1}}
		got, serr := io.ReadAll(r)
		if serr == nil {
			serr = io.EOF
		}
		if !bytes.HasPrefix(data, got) && !bytes.HasPrefix(got, data) {
			t.Fatalf("streamed data % x differs from decoded % x", got, data)
		}
		var de *DecodeError
		var re, sre *ResetError
		switch {
		case end == io.EOF:
			if serr != io.EOF || !bytes.Equal(got, data) {
				t.Fatalf("END: streamed %v after %d bytes, want io.EOF after %d", serr, len(got), len(data))
			}
		case errors.As(end, &re):
			if !errors.As(serr, &sre) || *sre != *re || !bytes.Equal(got, data) {
				t.Fatalf("RESET %v: streamed %v", re, serr)
			}
		case errors.As(end, &de):
			if !errors.As(serr, &de) {
				t.Fatalf("malformed (%v): streamed %v", end, serr)
			}
		case end == ErrShort:
			if serr != errFIN && serr != io.ErrUnexpectedEOF {
				t.Fatalf("incomplete: streamed %v", serr)
			}
		}
	})
}

// FuzzGuard passes yamux bytes through a Guard in chunks and checks that
// the bytes come out unchanged until a flood stops them, that the chunking
// does not change the verdict, and that nothing panics.
func FuzzGuard(f *testing.F) {
	for _, s := range guardSeeds() {
		f.Add(s[0].([]byte), s[1].(uint8))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		now := func() time.Time { return time.Unix(0, 0) }
		whole := NewGuard(bytes.NewReader(in), now)
		wb, werr := io.ReadAll(whole)
		g := NewGuard(&chunked{b: in, n: int(chunk%32) + 1}, now)
		got, err := io.ReadAll(g)
		if !bytes.HasPrefix(in, got) || !bytes.HasPrefix(in, wb) {
			t.Fatal("the guard changed the bytes")
		}
		if errors.Is(err, ErrPingFlood) != errors.Is(werr, ErrPingFlood) {
			t.Fatalf("chunked in %d: %v; whole: %v", chunk%32+1, err, werr)
		}
		if err == nil && !bytes.Equal(got, in) {
			t.Fatal("bytes lost without an error")
		}
	})
}
