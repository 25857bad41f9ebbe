package dataplane

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzSeeds returns the seed payloads of each fuzz target, by file name:
// the golden vectors' payloads plus a few malformed ones.
func fuzzSeeds(t testing.TB) map[string]map[string][]byte {
	seeds := map[string]map[string][]byte{
		"FuzzControl":         {},
		"FuzzConnectRequest":  {},
		"FuzzConnectResponse": {},
		"FuzzParseTarget":     {},
	}
	target := map[msgKind]string{
		kindControl:         "FuzzControl",
		kindConnectRequest:  "FuzzConnectRequest",
		kindConnectResponse: "FuzzConnectResponse",
	}
	for _, v := range goldenVectors() {
		seeds[target[v.kind]]["golden-"+v.name] = unhex(t, v.hex)[FrameHeaderLen:]
	}
	seeds["FuzzControl"]["hostile-subnet-count"] = unhex(t, "01 00 01 00 00 00 00 00 00 00 01 FF FF FF FF 00 00 00 00 00")
	seeds["FuzzControl"]["upper-case-domain"] = rawRouteAdvertise([][5]byte{{10, 0, 0, 1, 8}}, []string{"*.Contoso.LOCAL"}, 2)
	seeds["FuzzControl"]["unknown-tag"] = unhex(t, "06 00 01")
	seeds["FuzzConnectRequest"]["unknown-tag"] = unhex(t, "02 00 01")
	seeds["FuzzConnectResponse"]["unknown-tag"] = unhex(t, "02 00 01")
	for name, target := range map[string]string{
		"ipv4": "10.0.0.5:22", "ipv6": "[2001:db8::1]:443", "mapped": "[::ffff:127.0.0.1]:80",
		"zoned": "[fe80::1%eth0]:22", "name": "DB01.Contoso.Local.:5432", "no-port": "host",
		"port-zero": "host:0", "port-big": "host:65536", "empty-label": "a..b:1", "bare-v6": "::1:22",
		"underscore": "_sip._tcp.example:5060", "long-label": strings.Repeat("a", 64) + ".x:1",
	} {
		seeds["FuzzParseTarget"][name] = []byte(target)
	}
	return seeds
}

// corpusFile renders one seed in the "go test fuzz v1" format.
func corpusFile(payload []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(payload)) + ")\n")
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
			want := corpusFile(payload)
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

// checkDecodeError fails unless err is one of the payload errors a decoder
// may return.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var (
		te *TruncatedError
		ut *UnknownTagError
		iv *InvalidFieldError
	)
	switch {
	case errors.As(err, &te):
		if te.Field == "" || te.Need <= te.Have {
			t.Fatalf("bad truncation error %+v", te)
		}
	case errors.As(err, &ut):
	case errors.As(err, &iv):
		if iv.Field == "" || iv.Reason == "" {
			t.Fatalf("bad invalid-field error %+v", iv)
		}
	default:
		t.Fatalf("decoder returned %T %v", err, err)
	}
}

// fuzzCodec is the body shared by the fuzz targets: payload is decoded; a
// decoded message must re-encode to a payload of the same length that
// decodes to an identical message and re-encodes to identical bytes; the
// reader must agree with the decoder; and payload read as a raw stream must
// never panic.
func fuzzCodec(t *testing.T, k msgKind, limit int, payload []byte) {
	m, err := decodePayload(k, payload)
	if err != nil {
		checkDecodeError(t, err)
	} else {
		frame, err := m.AppendFrame(nil)
		if len(payload) > limit {
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("re-encode of a %d-byte payload: %v", len(payload), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("re-encode %#v: %v", m, err)
		}
		checkHeader(t, frame)
		// Canonical form only changes bool bytes and domain case, never a
		// length.
		if got := len(frame) - FrameHeaderLen; got != len(payload) {
			t.Fatalf("re-encoded payload of %d bytes, input %d", got, len(payload))
		}
		m2, err := decodePayload(k, frame[FrameHeaderLen:])
		if err != nil {
			t.Fatalf("decode of re-encoded %#v: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("decode→encode→decode changed the message:\n%#v\n%#v", m, m2)
		}
		frame2, err := m2.AppendFrame(nil)
		if err != nil || !bytes.Equal(frame, frame2) {
			t.Fatalf("second encoding differs: %v", err)
		}
	}

	// The same payload framed, through a reader.
	if len(payload) <= limit {
		framed := append(u32(uint32(len(payload))), payload...)
		rm, rerr := readFrame(k, bytes.NewReader(framed))
		if (err == nil) != (rerr == nil) || (err == nil && !reflect.DeepEqual(m, rm)) {
			t.Fatalf("reader disagrees with decoder: %v / %v", err, rerr)
		}
	}

	// The payload as a raw stream of frames.
	var next func() error
	src := bytes.NewReader(payload)
	switch k {
	case kindControl:
		r := NewControlReader(src)
		next = func() error { _, err := r.ReadControl(); return err }
	case kindConnectRequest:
		r := NewSessionReader(src)
		next = func() error { _, err := r.ReadConnectRequest(); return err }
	default:
		r := NewSessionReader(src)
		next = func() error { _, err := r.ReadConnectResponse(); return err }
	}
	for range len(payload)/FrameHeaderLen + 1 {
		err := next()
		if err == nil {
			continue
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMessageTooLarge) {
			break
		}
		checkDecodeError(t, err)
	}
}

func FuzzControl(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzControl (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, payload []byte) {
		fuzzCodec(t, kindControl, MaxControlPayload, payload)
	})
}

func FuzzConnectRequest(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzConnectRequest (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, payload []byte) {
		fuzzCodec(t, kindConnectRequest, MaxSessionPayload, payload)
	})
}

func FuzzConnectResponse(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzConnectResponse (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, payload []byte) {
		fuzzCodec(t, kindConnectResponse, MaxSessionPayload, payload)
	})
}

// FuzzParseTarget: an accepted target is an IP literal (unmapped, no zone)
// or a lower-case name without a trailing dot, with a non-zero port, and
// its String form parses back to the same Target.
func FuzzParseTarget(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParseTarget (see TestFuzzCorpus).
	f.Fuzz(func(t *testing.T, b []byte) {
		tgt, err := ParseTarget(string(b))
		if err != nil {
			var te *TargetError
			if !errors.As(err, &te) {
				t.Fatalf("ParseTarget(%q): error %T %v, want a *TargetError", b, err, err)
			}
			return
		}
		if tgt.Port == 0 {
			t.Fatalf("ParseTarget(%q) = %+v with port 0", b, tgt)
		}
		if tgt.IsName() == tgt.Addr.IsValid() {
			t.Fatalf("ParseTarget(%q) = %+v: neither or both of name and address", b, tgt)
		}
		if tgt.IsName() && (tgt.Name != strings.ToLower(tgt.Name) || strings.HasSuffix(tgt.Name, ".")) {
			t.Fatalf("ParseTarget(%q) name %q not canonical", b, tgt.Name)
		}
		if !tgt.IsName() && (tgt.Addr.Is4In6() || tgt.Addr.Zone() != "") {
			t.Fatalf("ParseTarget(%q) address %v not canonical", b, tgt.Addr)
		}
		again, err := ParseTarget(tgt.String())
		if err != nil || again != tgt {
			t.Fatalf("ParseTarget(%q) = %+v, but its String %q parses to %+v, %v", b, tgt, tgt.String(), again, err)
		}
	})
}
