package peer

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzSeeds returns the seed payloads of each fuzz target, by file name:
// the golden frames' payloads plus malformed ones.
func fuzzSeeds(t testing.TB) map[string]map[string][]byte {
	payload := func(frame string) []byte { return unhex(t, frame)[frameHeaderLen:] }
	return map[string]map[string][]byte{
		"FuzzForward": {
			"golden":        payload(goldenForward),
			"unknown-tag":   unhex(t, "02 00 01"),
			"trailing-byte": unhex(t, "01 00 01"+strings.Repeat(" 00", 33)),
			"truncated":     unhex(t, "01 00 01 0A 1B"),
		},
		"FuzzStatus": {
			"golden-accepted": payload(goldenAccepted),
			"golden-refused":  payload(goldenRefused),
			"reason-too-long": unhex(t, "01 00 01 04 01 01"),
			"bad-utf8":        unhex(t, "01 00 01 01 00 02 C3 28"),
			"unknown-tag":     unhex(t, "05 00 01"),
		},
	}
}

// TestFuzzCorpus checks that the committed seed corpus holds every seed;
// run with -update-corpus to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, payload := range seeds {
			path := filepath.Join(dir, name)
			want := []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(payload)) + ")\n")
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("seed missing (run go test -run TestFuzzCorpus -update-corpus): %v", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale (run go test -run TestFuzzCorpus -update-corpus)", path)
			}
		}
	}
}

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
