package dataplane

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// encoder is what every message type implements.
type encoder interface {
	AppendFrame(dst []byte) ([]byte, error)
}

// kind of message a golden vector holds, which picks decoder and reader.
type msgKind int

const (
	kindControl msgKind = iota
	kindConnectRequest
	kindConnectResponse
)

// decodePayload decodes p with the decoder for k and returns a pointer to
// the message.
func decodePayload(k msgKind, p []byte) (encoder, error) {
	switch k {
	case kindConnectRequest:
		m, err := DecodeConnectRequest(p)
		if err != nil {
			return nil, err
		}
		return &m, nil
	case kindConnectResponse:
		m, err := DecodeConnectResponse(p)
		if err != nil {
			return nil, err
		}
		return &m, nil
	default:
		m, err := DecodeControl(p)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}

// readFrame reads one message of kind k from src with a fresh reader.
func readFrame(k msgKind, src io.Reader) (encoder, error) {
	switch k {
	case kindConnectRequest:
		m, err := NewSessionReader(src).ReadConnectRequest()
		if err != nil {
			return nil, err
		}
		return &m, nil
	case kindConnectResponse:
		m, err := NewSessionReader(src).ReadConnectResponse()
		if err != nil {
			return nil, err
		}
		return &m, nil
	default:
		m, err := NewControlReader(src).ReadControl()
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}

// unhex decodes a hex string that may contain spaces and line breaks.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex literal: %v", err)
	}
	return b
}

type goldenVector struct {
	name string
	kind msgKind
	msg  encoder
	hex  string // the whole frame, derived by hand from PROTOCOL.md
}

// goldenVectors are the exact-bytes vectors. The Heartbeat one is the
// example of DESIGN.md §2; the others were written out by hand from the
// tables, not produced by the encoder.
func goldenVectors() []goldenVector {
	return []goldenVector{
		{
			name: "Heartbeat",
			kind: kindControl,
			msg:  &Heartbeat{Version: 1, TimestampMs: 0x123456789ABCDEF0, ActiveStreamCount: 42},
			hex:  "00 00 00 0F 02 00 01 12 34 56 78 9A BC DE F0 00 00 00 2A",
		},
		{
			name: "HeartbeatAck",
			kind: kindControl,
			msg:  &HeartbeatAck{Version: 1, TimestampMs: 0x0102030405060708},
			hex:  "00 00 00 0B 03 00 01 01 02 03 04 05 06 07 08",
		},
		{
			name: "RouteAdvertise",
			kind: kindControl,
			msg: &RouteAdvertise{
				Version: 1,
				Epoch:   7,
				Subnets: []netip.Prefix{
					netip.MustParsePrefix("10.10.0.0/24"),
					netip.PrefixFrom(netip.MustParseAddr("10.1.2.3"), 8), // host bits kept
				},
				Domains: []DomainRoute{
					{Name: "contoso.local"},
					{Name: "*.corp.example", AutoDetected: true},
				},
			},
			hex: `00 00 00 42
				01 00 01 00 00 00 00 00 00 00 07
				00 00 00 02  0A 0A 00 00 18  0A 01 02 03 08
				00 00 00 02
				00 00 00 0D 63 6F 6E 74 6F 73 6F 2E 6C 6F 63 61 6C 00
				00 00 00 0E 2A 2E 63 6F 72 70 2E 65 78 61 6D 70 6C 65 01`,
		},
		{
			name: "RouteAdvertiseEmpty",
			kind: kindControl,
			msg:  &RouteAdvertise{Version: 1},
			hex:  "00 00 00 13 01 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
		},
		{
			name: "CertRenewalRequest",
			kind: kindControl,
			msg:  &CertRenewalRequest{Version: 1, CSRPEM: "CSR"},
			hex:  "00 00 00 0A 04 00 01 00 00 00 03 43 53 52",
		},
		{
			name: "CertRenewalResponseSuccess",
			kind: kindControl,
			msg:  &CertRenewalResponse{Version: 1, Result: ResultSuccess, ClientCertPEM: "C", CACertPEM: "CA"},
			hex:  "00 00 00 0F 05 00 01 00 00 00 00 01 43 00 00 00 02 43 41",
		},
		{
			name: "CertRenewalResponseError",
			kind: kindControl,
			msg:  &CertRenewalResponse{Version: 1, Result: ResultError, Reason: "denied"},
			hex:  "00 00 00 0E 05 00 01 01 00 00 00 06 64 65 6E 69 65 64",
		},
		{
			name: "ConnectRequest",
			kind: kindConnectRequest,
			msg: &ConnectRequest{
				Version:   1,
				SessionID: SessionID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF},
				Target:    "10.10.0.5:22",
			},
			hex: `00 00 00 23 01 00 01
				00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF
				00 00 00 0C 31 30 2E 31 30 2E 30 2E 35 3A 32 32`,
		},
		{
			name: "ConnectRequestIPv6",
			kind: kindConnectRequest,
			msg: &ConnectRequest{
				Version:   1,
				SessionID: SessionID{0x0F, 0x1E, 0x2D, 0x3C, 0x4B, 0x5A, 0x69, 0x78, 0x87, 0x96, 0xA5, 0xB4, 0xC3, 0xD2, 0xE1, 0xF0},
				Target:    "[2001:db8::1]:22",
			},
			hex: `00 00 00 27 01 00 01
				0F 1E 2D 3C 4B 5A 69 78 87 96 A5 B4 C3 D2 E1 F0
				00 00 00 10 5B 32 30 30 31 3A 64 62 38 3A 3A 31 5D 3A 32 32`,
		},
		{
			name: "ConnectResponseSuccess",
			kind: kindConnectResponse,
			msg:  &ConnectResponse{Version: 1, Result: ResultSuccess},
			hex:  "00 00 00 03 00 00 01",
		},
		{
			name: "ConnectResponseError",
			kind: kindConnectResponse,
			msg:  &ConnectResponse{Version: 1, Result: ResultError, Reason: "refused"},
			hex:  "00 00 00 0E 01 00 01 00 00 00 07 72 65 66 75 73 65 64",
		},
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, v := range goldenVectors() {
		t.Run(v.name, func(t *testing.T) {
			want := unhex(t, v.hex)
			got, err := v.msg.AppendFrame(nil)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendFrame =\n% X\nwant\n% X", got, want)
			}
			// Appending keeps what dst held.
			prefix := []byte("prefix")
			got, err = v.msg.AppendFrame(prefix)
			if err != nil {
				t.Fatalf("AppendFrame(prefix): %v", err)
			}
			if !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Fatalf("AppendFrame(prefix) = % X", got)
			}
		})
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, v := range goldenVectors() {
		t.Run(v.name, func(t *testing.T) {
			frame := unhex(t, v.hex)
			got, err := decodePayload(v.kind, frame[FrameHeaderLen:])
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, v.msg) {
				t.Fatalf("decode = %#v, want %#v", got, v.msg)
			}
		})
	}
}

func TestGoldenRead(t *testing.T) {
	for _, v := range goldenVectors() {
		t.Run(v.name, func(t *testing.T) {
			// Two copies of the frame back to back: the reader takes one
			// frame per call and then reports a clean io.EOF.
			frame := unhex(t, v.hex)
			src := bytes.NewReader(append(append([]byte{}, frame...), frame...))
			var next func() (encoder, error)
			switch v.kind {
			case kindConnectRequest:
				r := NewSessionReader(src)
				next = func() (encoder, error) { m, err := r.ReadConnectRequest(); return &m, err }
			case kindConnectResponse:
				r := NewSessionReader(src)
				next = func() (encoder, error) { m, err := r.ReadConnectResponse(); return &m, err }
			default:
				r := NewControlReader(src)
				next = func() (encoder, error) { return r.ReadControl() }
			}
			for i := range 2 {
				got, err := next()
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !reflect.DeepEqual(got, v.msg) {
					t.Fatalf("read %d = %#v, want %#v", i, got, v.msg)
				}
			}
			if _, err := next(); err != io.EOF {
				t.Fatalf("read after the last frame: err = %v, want io.EOF itself", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := []struct {
		kind msgKind
		msg  encoder
	}{
		{kindControl, &Heartbeat{Version: 1, TimestampMs: 1700000000123, ActiveStreamCount: 4096}},
		{kindControl, &Heartbeat{Version: 2}}, // decoders keep any version
		{kindControl, &HeartbeatAck{Version: 1, TimestampMs: 1<<64 - 1}},
		{kindControl, &RouteAdvertise{
			Version: 1, Epoch: 1<<64 - 1,
			Subnets: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("192.168.7.9/16")},
			Domains: []DomainRoute{{Name: "a"}, {Name: "_ldap._tcp.dc.local", AutoDetected: true}, {Name: "bücher.example"}},
		}},
		{kindControl, &CertRenewalRequest{Version: 1, CSRPEM: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}},
		{kindControl, &CertRenewalRequest{Version: 1}},
		{kindControl, &CertRenewalResponse{Version: 1, Result: ResultSuccess}},
		{kindControl, &CertRenewalResponse{Version: 1, Result: ResultError}},
		{kindConnectRequest, &ConnectRequest{Version: 1, Target: "db01.finance.contoso.local:5432"}},
		{kindConnectRequest, &ConnectRequest{Version: 7, Target: "日本.example:80"}},
		{kindConnectResponse, &ConnectResponse{Version: 1, Result: ResultError, Reason: "unsupported protocol version: 2"}},
		{kindConnectResponse, &ConnectResponse{Version: 0}},
	}
	for _, tc := range msgs {
		frame, err := tc.msg.AppendFrame(nil)
		if err != nil {
			t.Fatalf("%#v: AppendFrame: %v", tc.msg, err)
		}
		checkHeader(t, frame)
		got, err := decodePayload(tc.kind, frame[FrameHeaderLen:])
		if err != nil {
			t.Fatalf("%#v: decode: %v", tc.msg, err)
		}
		if !reflect.DeepEqual(got, tc.msg) {
			t.Errorf("round trip = %#v, want %#v", got, tc.msg)
		}
		got, err = readFrame(tc.kind, bytes.NewReader(frame))
		if err != nil {
			t.Fatalf("%#v: read: %v", tc.msg, err)
		}
		if !reflect.DeepEqual(got, tc.msg) {
			t.Errorf("read round trip = %#v, want %#v", got, tc.msg)
		}
	}
}

// checkHeader checks that a frame's length prefix matches its payload.
func checkHeader(t testing.TB, frame []byte) {
	t.Helper()
	if len(frame) < FrameHeaderLen {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	n := int(frame[0])<<24 | int(frame[1])<<16 | int(frame[2])<<8 | int(frame[3])
	if n != len(frame)-FrameHeaderLen {
		t.Fatalf("length prefix %d, payload %d bytes", n, len(frame)-FrameHeaderLen)
	}
}

// TestTruncation cuts every golden vector at every point: a stream that
// ends inside a frame gives io.ErrUnexpectedEOF (io.EOF itself when it ends
// before the first byte), and a payload that ends early gives a
// *TruncatedError naming the field.
func TestTruncation(t *testing.T) {
	for _, v := range goldenVectors() {
		t.Run(v.name, func(t *testing.T) {
			frame := unhex(t, v.hex)
			for i := range len(frame) {
				_, err := readFrame(v.kind, bytes.NewReader(frame[:i]))
				switch {
				case i == 0 && err != io.EOF:
					t.Errorf("empty stream: err = %v, want io.EOF", err)
				case i > 0 && !errors.Is(err, io.ErrUnexpectedEOF):
					t.Errorf("stream cut at %d: err = %v, want io.ErrUnexpectedEOF", i, err)
				}
			}
			payload := frame[FrameHeaderLen:]
			for i := range len(payload) {
				_, err := decodePayload(v.kind, payload[:i])
				var te *TruncatedError
				if !errors.As(err, &te) || !errors.Is(err, ErrTruncated) {
					t.Errorf("payload cut at %d: err = %v, want *TruncatedError", i, err)
					continue
				}
				if te.Field == "" || te.Need <= te.Have {
					t.Errorf("payload cut at %d: %+v", i, te)
				}
				// The same truncated payload in a well-formed frame.
				cut := append(u32(uint32(i)), payload[:i]...)
				if _, err := readFrame(v.kind, bytes.NewReader(cut)); !errors.Is(err, ErrTruncated) {
					t.Errorf("frame with payload cut at %d: err = %v, want ErrTruncated", i, err)
				}
			}
		})
	}
}

func TestTruncatedFieldNames(t *testing.T) {
	tests := []struct {
		name    string
		kind    msgKind
		payload string
		field   string
	}{
		{"empty control", kindControl, "", "ControlMessage.tag"},
		{"empty request", kindConnectRequest, "", "ConnectRequest.tag"},
		{"empty response", kindConnectResponse, "", "ConnectResponse.tag"},
		{"heartbeat version", kindControl, "02 00", "Heartbeat.version"},
		{"heartbeat count", kindControl, "02 00 01 00 00 00 00 00 00 00 00 00 00 00", "Heartbeat.active_stream_count"},
		{"subnet count", kindControl, "01 00 01 00 00 00 00 00 00 00 00 00 00", "RouteAdvertise.subnets.count"},
		{"subnet list", kindControl, "01 00 01 00 00 00 00 00 00 00 00 00 00 00 02 0A 00 00 00 08", "RouteAdvertise.subnets"},
		{"domain name length", kindControl, "01 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 02 00 00 00 05 61 62 63 64 65 00 00 00 00", "RouteAdvertise.domains[1].name.length"},
		{"domain auto", kindControl, "01 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 02 00 00 00 01 61 00 00 00 00 02 61 62", "RouteAdvertise.domains[1].auto_detected"},
		{"csr bytes", kindControl, "04 00 01 00 00 00 05 41", "CertRenewalRequest.csr_pem"},
		{"session id", kindConnectRequest, "01 00 01 00 11 22", "ConnectRequest.session_id"},
		{"reason length", kindConnectResponse, "01 00 01 00 00", "ConnectResponse.reason.length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodePayload(tc.kind, unhex(t, tc.payload))
			var te *TruncatedError
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want *TruncatedError", err)
			}
			if te.Field != tc.field {
				t.Fatalf("Field = %q, want %q", te.Field, tc.field)
			}
		})
	}
}

// u32 returns n as 4 big-endian bytes.
func u32(n uint32) []byte { return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }
