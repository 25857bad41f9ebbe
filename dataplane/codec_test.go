package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// headerOnlyReader returns a frame header and fails the test if it is read
// again: a limit error must come without touching the payload.
type headerOnlyReader struct {
	t    *testing.T
	hdr  []byte
	done bool
}

func (r *headerOnlyReader) Read(p []byte) (int, error) {
	if r.done {
		r.t.Errorf("Read called after the frame header")
		return 0, errors.New("read after header")
	}
	r.done = true
	return copy(p, r.hdr), nil
}

// sizedCSR returns a CertRenewalRequest whose payload is exactly n bytes.
func sizedCSR(n int) *CertRenewalRequest {
	return &CertRenewalRequest{Version: 1, CSRPEM: strings.Repeat("A", n-headerLen-stringLenLen)}
}

// sizedResponse returns a ConnectResponse Error whose payload is n bytes.
func sizedResponse(n int) *ConnectResponse {
	return &ConnectResponse{Version: 1, Result: ResultError, Reason: strings.Repeat("r", n-headerLen-stringLenLen)}
}

// sizedRequest returns a ConnectRequest whose payload is n bytes.
func sizedRequest(n int) *ConnectRequest {
	return &ConnectRequest{Version: 1, Target: strings.Repeat("h", n-connectRequestFixedLen-3) + ":22"}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name  string
		kind  msgKind
		limit int
		make  func(n int) encoder
	}{
		{"control CertRenewalRequest", kindControl, MaxControlPayload, func(n int) encoder { return sizedCSR(n) }},
		{"session ConnectResponse", kindConnectResponse, MaxSessionPayload, func(n int) encoder { return sizedResponse(n) }},
		{"session ConnectRequest", kindConnectRequest, MaxSessionPayload, func(n int) encoder { return sizedRequest(n) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Exactly the limit: sent and received.
			atLimit := tc.make(tc.limit)
			frame, err := atLimit.AppendFrame(nil)
			if err != nil {
				t.Fatalf("AppendFrame at the limit: %v", err)
			}
			if len(frame) != FrameHeaderLen+tc.limit {
				t.Fatalf("frame of %d bytes, want %d", len(frame), FrameHeaderLen+tc.limit)
			}
			checkHeader(t, frame)
			got, err := readFrame(tc.kind, bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("read at the limit: %v", err)
			}
			if !reflect.DeepEqual(got, atLimit) {
				t.Fatalf("read at the limit returned a different message")
			}

			// One more byte: refused on send, nothing appended.
			dst := []byte("keep")
			out, err := tc.make(tc.limit + 1).AppendFrame(dst)
			var tooLarge *MessageTooLargeError
			if !errors.As(err, &tooLarge) || !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("AppendFrame over the limit: err = %v, want *MessageTooLargeError", err)
			}
			if tooLarge.Size != uint64(tc.limit+1) || tooLarge.Limit != uint64(tc.limit) {
				t.Fatalf("error = %+v", tooLarge)
			}
			if string(out) != "keep" || len(out) != 4 {
				t.Fatalf("dst changed on error: %q", out)
			}

			// One more byte: refused on receive right after the header.
			hdr := &headerOnlyReader{t: t, hdr: u32(uint32(tc.limit + 1))}
			_, err = readFrame(tc.kind, hdr)
			tooLarge = nil
			if !errors.As(err, &tooLarge) {
				t.Fatalf("read over the limit: err = %v, want *MessageTooLargeError", err)
			}
			if tooLarge.Size != uint64(tc.limit+1) || tooLarge.Limit != uint64(tc.limit) {
				t.Fatalf("error = %+v", tooLarge)
			}
			// Hostile maximum.
			hdr = &headerOnlyReader{t: t, hdr: u32(0xFFFFFFFF)}
			if _, err := readFrame(tc.kind, hdr); !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("read of a 4 GiB frame: err = %v", err)
			}
		})
	}
}

// TestLimitPerStream checks that a control-sized frame is too large for a
// session stream and that the stream kind is reported.
func TestLimitPerStream(t *testing.T) {
	hdr := &headerOnlyReader{t: t, hdr: u32(MaxSessionPayload + 1)}
	_, err := NewSessionReader(hdr).ReadConnectRequest()
	var tooLarge *MessageTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.Stream != SessionStream {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "session") || !strings.Contains(err.Error(), "65537") {
		t.Fatalf("message %q", err)
	}
	// The same size is fine on the control stream (then the stream ends).
	_, err = NewControlReader(bytes.NewReader(u32(MaxSessionPayload + 1))).ReadControl()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("control: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReaderStickyErrors(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		hdr := &headerOnlyReader{t: t, hdr: u32(MaxControlPayload + 1)}
		r := NewControlReader(hdr)
		_, err1 := r.ReadControl()
		_, err2 := r.ReadControl() // must not read: hdr fails the test if it does
		if !errors.Is(err1, ErrMessageTooLarge) || err1 != err2 {
			t.Fatalf("errors %v, %v", err1, err2)
		}
	})
	t.Run("clean EOF", func(t *testing.T) {
		r := NewSessionReader(bytes.NewReader(nil))
		for range 2 {
			if _, err := r.ReadConnectResponse(); err != io.EOF {
				t.Fatalf("err = %v, want io.EOF", err)
			}
		}
	})
	t.Run("I/O error", func(t *testing.T) {
		boom := errors.New("stream reset")
		r := NewControlReader(io.MultiReader(bytes.NewReader([]byte{0, 0}), &errReader{boom}))
		_, err := r.ReadControl()
		if !errors.Is(err, boom) || err == boom {
			t.Fatalf("err = %v, want wrapped %v", err, boom)
		}
		if _, err2 := r.ReadControl(); err2 != err {
			t.Fatalf("second err = %v", err2)
		}
		// Reset gives the reader a new stream.
		frame, _ := (&Heartbeat{Version: 1}).AppendFrame(nil)
		r.Reset(bytes.NewReader(frame))
		if m, err := r.ReadControl(); err != nil || m.Tag() != TagHeartbeat {
			t.Fatalf("after Reset: %v, %v", m, err)
		}
	})
	t.Run("I/O error before any byte", func(t *testing.T) {
		boom := errors.New("stream reset")
		_, err := NewSessionReader(&errReader{boom}).ReadConnectRequest()
		if !errors.Is(err, boom) || errors.Is(err, io.EOF) {
			t.Fatalf("err = %v", err)
		}
	})
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// TestReaderContinuesAfterPayloadError checks that a bad payload consumes
// its frame and leaves the reader in step, so the control loop can log an
// unknown tag and go on.
func TestReaderContinuesAfterPayloadError(t *testing.T) {
	var stream []byte
	stream = append(stream, unhex(t, "00 00 00 03 09 00 01")...)                            // unknown tag 0x09
	stream = append(stream, unhex(t, "00 00 00 04 03 00 01 00")...)                         // truncated HeartbeatAck
	stream = append(stream, unhex(t, "00 00 00 04 04 00 01 00")...)                         // truncated csr_pem length
	stream = append(stream, unhex(t, "00 00 00 0C 03 00 01 00 00 00 00 00 00 00 05 FF")...) // trailing byte
	stream, _ = (&Heartbeat{Version: 1, ActiveStreamCount: 3}).AppendFrame(stream)

	r := NewControlReader(bytes.NewReader(stream))
	_, err := r.ReadControl()
	var ut *UnknownTagError
	if !errors.As(err, &ut) || ut.Tag != 0x09 || ut.Stream != ControlStream {
		t.Fatalf("first: err = %v, want unknown tag 0x09", err)
	}
	if _, err := r.ReadControl(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("second: err = %v, want ErrTruncated", err)
	}
	if _, err := r.ReadControl(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("third: err = %v, want ErrTruncated", err)
	}
	if _, err := r.ReadControl(); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("fourth: err = %v, want ErrInvalidField", err)
	}
	m, err := r.ReadControl()
	if err != nil {
		t.Fatalf("fifth: %v", err)
	}
	if hb, ok := m.(*Heartbeat); !ok || hb.ActiveStreamCount != 3 {
		t.Fatalf("fifth = %#v", m)
	}
	if _, err := r.ReadControl(); err != io.EOF {
		t.Fatalf("end: err = %v", err)
	}
}

// TestSessionReaderStopsAtFrame checks that a session reader leaves the
// bytes after its frame on the stream for the raw copy.
func TestSessionReaderStopsAtFrame(t *testing.T) {
	req := &ConnectRequest{Version: 1, Target: "10.0.0.1:22"}
	frame, err := req.AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	src := bytes.NewReader(append(frame, "SSH-2.0-OpenSSH_9.6\r\n"...))
	got, err := NewSessionReader(src).ReadConnectRequest()
	if err != nil || got != *req {
		t.Fatalf("ReadConnectRequest = %#v, %v", got, err)
	}
	rest, _ := io.ReadAll(src)
	if string(rest) != "SSH-2.0-OpenSSH_9.6\r\n" {
		t.Fatalf("left on the stream: %q", rest)
	}
}

// TestControlReaderReuse pins down the aliasing contract of ReadControl.
func TestControlReaderReuse(t *testing.T) {
	var stream []byte
	stream, _ = (&Heartbeat{Version: 1, TimestampMs: 1}).AppendFrame(stream)
	stream, _ = (&Heartbeat{Version: 1, TimestampMs: 2}).AppendFrame(stream)
	ra1 := &RouteAdvertise{Version: 1, Epoch: 1, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Domains: []DomainRoute{{Name: "one.example"}}}
	ra2 := &RouteAdvertise{Version: 1, Epoch: 2, Subnets: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}, Domains: []DomainRoute{{Name: "two.example"}}}
	stream, _ = ra1.AppendFrame(stream)
	stream, _ = ra2.AppendFrame(stream)

	r := NewControlReader(bytes.NewReader(stream))
	m1, _ := r.ReadControl()
	kept := *m1.(*Heartbeat)
	m2, _ := r.ReadControl()
	if m1 != m2 {
		t.Fatalf("heartbeat values not reused")
	}
	if kept.TimestampMs != 1 || m2.(*Heartbeat).TimestampMs != 2 {
		t.Fatalf("kept %d, second %d", kept.TimestampMs, m2.(*Heartbeat).TimestampMs)
	}
	a1, _ := r.ReadControl()
	keptRA := *a1.(*RouteAdvertise)
	a2, _ := r.ReadControl()
	if !reflect.DeepEqual(&keptRA, ra1) || !reflect.DeepEqual(a2, ra2) {
		t.Fatalf("value copy of a RouteAdvertise changed: %#v", keptRA)
	}
}

// TestReaderBufferRetention checks that a frame over maxRetainedBuffer is
// not kept by the reader.
func TestReaderBufferRetention(t *testing.T) {
	var stream []byte
	stream, _ = sizedCSR(MaxControlPayload).AppendFrame(stream)
	stream, _ = (&Heartbeat{Version: 1}).AppendFrame(stream)
	r := NewControlReader(bytes.NewReader(stream))
	for range 2 {
		if _, err := r.ReadControl(); err != nil {
			t.Fatal(err)
		}
		if cap(r.fr.buf) > maxRetainedBuffer {
			t.Fatalf("reader keeps %d bytes", cap(r.fr.buf))
		}
	}
}

// rawRouteAdvertise builds a RouteAdvertise payload by hand, bypassing the
// encoder's checks.
func rawRouteAdvertise(subnets [][5]byte, domains []string, auto byte) []byte {
	b := []byte{byte(TagRouteAdvertise), 0, 1, 0, 0, 0, 0, 0, 0, 0, 9}
	b = binary.BigEndian.AppendUint32(b, uint32(len(subnets)))
	for _, s := range subnets {
		b = append(b, s[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(domains)))
	for _, d := range domains {
		b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
		b = append(b, d...)
		b = append(b, auto)
	}
	return b
}

func TestPrefixLength(t *testing.T) {
	m, err := DecodeControl(rawRouteAdvertise([][5]byte{{192, 168, 1, 77, 32}, {10, 9, 8, 7, 0}}, nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 1, 77}), 32),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 8, 7}), 0), // host bits kept
	}
	if got := m.(*RouteAdvertise).Subnets; !reflect.DeepEqual(got, want) {
		t.Fatalf("Subnets = %v, want %v", got, want)
	}

	_, err = DecodeControl(rawRouteAdvertise([][5]byte{{10, 0, 0, 0, 8}, {10, 0, 0, 0, 33}}, nil, 0))
	var inv *InvalidFieldError
	if !errors.As(err, &inv) || inv.Field != "RouteAdvertise.subnets[1].prefix_len" || !strings.Contains(inv.Reason, "33") {
		t.Fatalf("prefix 33: err = %v", err)
	}
	if _, err := DecodeControl(rawRouteAdvertise([][5]byte{{10, 0, 0, 0, 255}}, nil, 0)); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("prefix 255: err = %v", err)
	}

	for _, p := range []netip.Prefix{
		{}, // zero value: invalid
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("::ffff:10.0.0.0/104"),
	} {
		dst := []byte{1, 2}
		out, err := (&RouteAdvertise{Version: 1, Subnets: []netip.Prefix{p}}).AppendFrame(dst)
		if !errors.As(err, &inv) || inv.Field != "RouteAdvertise.subnets[0]" {
			t.Errorf("encode %v: err = %v", p, err)
		}
		if !bytes.Equal(out, []byte{1, 2}) {
			t.Errorf("encode %v: dst changed", p)
		}
	}
}

func TestBoolDecoding(t *testing.T) {
	for _, b := range []byte{0, 1, 2, 0x80, 0xFF} {
		m, err := DecodeControl(rawRouteAdvertise(nil, []string{"a.example"}, b))
		if err != nil {
			t.Fatal(err)
		}
		ra := m.(*RouteAdvertise)
		if ra.Domains[0].AutoDetected != (b != 0) {
			t.Fatalf("byte %#x decoded as %v", b, ra.Domains[0].AutoDetected)
		}
		frame, _ := ra.AppendFrame(nil)
		if last := frame[len(frame)-1]; last != boolByte(b != 0) {
			t.Fatalf("byte %#x re-encoded as %#x", b, last)
		}
	}
}

// TestHostileListCounts checks that a count the payload cannot hold fails
// as truncated before the list is allocated.
func TestHostileListCounts(t *testing.T) {
	subnets := unhex(t, "01 00 01 00 00 00 00 00 00 00 01 FF FF FF FF 00 00 00 00 00") // 20 bytes
	domains := unhex(t, "01 00 01 00 00 00 00 00 00 00 01 00 00 00 00 FF FF FF FF 00 00 00 00 00")
	if len(subnets) != 20 {
		t.Fatalf("payload of %d bytes", len(subnets))
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		field   string
	}{
		{"subnets", subnets, "RouteAdvertise.subnets"},
		{"domains", domains, "RouteAdvertise.domains"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeControl(tc.payload)
			var te *TruncatedError
			if !errors.As(err, &te) || te.Field != tc.field {
				t.Fatalf("err = %v, want truncated %s", err, tc.field)
			}
			if te.Need != 0xFFFFFFFF*5 || te.Have != 5 {
				t.Fatalf("Need %d Have %d", te.Need, te.Have)
			}
			allocs := testing.AllocsPerRun(100, func() { _, _ = DecodeControl(tc.payload) })
			if allocs > 2 { // the RouteAdvertise and the error
				t.Fatalf("%v allocations", allocs)
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				_, _ = DecodeControl(tc.payload)
			}
			runtime.ReadMemStats(&after)
			if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 512 {
				t.Fatalf("%d bytes allocated per decode", perRun)
			}
		})
	}
}

func TestTrailingBytes(t *testing.T) {
	for _, v := range goldenVectors() {
		t.Run(v.name, func(t *testing.T) {
			payload := append(unhex(t, v.hex)[FrameHeaderLen:], 0)
			_, err := decodePayload(v.kind, payload)
			var inv *InvalidFieldError
			if !errors.As(err, &inv) || !strings.Contains(inv.Reason, "1 trailing bytes") {
				t.Fatalf("err = %v, want trailing bytes", err)
			}
			if !strings.HasPrefix(v.name, inv.Field) {
				t.Fatalf("Field = %q", inv.Field)
			}
		})
	}
}

func TestUnknownTags(t *testing.T) {
	tests := []struct {
		kind    msgKind
		payload string
		stream  StreamKind
		message string
	}{
		{kindControl, "00 00 01", ControlStream, "control message"},
		{kindControl, "06 00 01", ControlStream, "control message"},
		{kindControl, "FF", ControlStream, "control message"}, // tag before truncation
		{kindConnectRequest, "00 00 01", SessionStream, "ConnectRequest"},
		{kindConnectRequest, "02", SessionStream, "ConnectRequest"},
		{kindConnectResponse, "02 00 01", SessionStream, "ConnectResponse"},
		{kindConnectResponse, "FF", SessionStream, "ConnectResponse"},
	}
	for _, tc := range tests {
		payload := unhex(t, tc.payload)
		for _, via := range []string{"decode", "read"} {
			var err error
			if via == "decode" {
				_, err = decodePayload(tc.kind, payload)
			} else {
				_, err = readFrame(tc.kind, bytes.NewReader(append(u32(uint32(len(payload))), payload...)))
			}
			var ut *UnknownTagError
			if !errors.As(err, &ut) || !errors.Is(err, ErrUnknownTag) {
				t.Errorf("%s %s: err = %v, want *UnknownTagError", via, tc.payload, err)
				continue
			}
			if ut.Tag != payload[0] || ut.Stream != tc.stream || ut.Message != tc.message {
				t.Errorf("%s %s: %+v", via, tc.payload, ut)
			}
		}
	}
	err := &UnknownTagError{Stream: SessionStream, Message: "ConnectRequest", Tag: 7}
	if got := err.Error(); got != "dataplane: unknown ConnectRequest tag 0x07 on session stream" {
		t.Errorf("Error() = %q", got)
	}
}

func TestInvalidUTF8(t *testing.T) {
	const bad = "ok\xffno"
	decodeTests := []struct {
		name    string
		kind    msgKind
		payload []byte
		field   string
	}{
		{"csr", kindControl, append(unhex(t, "04 00 01 00 00 00 05"), bad...), "CertRenewalRequest.csr_pem"},
		{"client cert", kindControl, append(unhex(t, "05 00 01 00 00 00 00 05"), bad+"\x00\x00\x00\x00"...), "CertRenewalResponse.client_cert_pem"},
		{"ca cert", kindControl, append(unhex(t, "05 00 01 00 00 00 00 00 00 00 00 05"), bad...), "CertRenewalResponse.ca_cert_pem"},
		{"renewal reason", kindControl, append(unhex(t, "05 00 01 01 00 00 00 05"), bad...), "CertRenewalResponse.reason"},
		{"domain", kindControl, rawRouteAdvertise(nil, []string{"a.example", "b\xc3.example"}, 0), "RouteAdvertise.domains[1].name"},
		{"target", kindConnectRequest, append(unhex(t, "01 00 01 00000000000000000000000000000000 00 00 00 05"), bad...), "ConnectRequest.target"},
		{"response reason", kindConnectResponse, append(unhex(t, "01 00 01 00 00 00 05"), bad...), "ConnectResponse.reason"},
	}
	for _, tc := range decodeTests {
		_, err := decodePayload(tc.kind, tc.payload)
		var inv *InvalidFieldError
		if !errors.As(err, &inv) || inv.Field != tc.field || inv.Reason != "invalid UTF-8" {
			t.Errorf("decode %s: err = %v", tc.name, err)
		}
	}
	encodeTests := []struct {
		name  string
		msg   encoder
		field string
	}{
		{"csr", &CertRenewalRequest{CSRPEM: bad}, "CertRenewalRequest.csr_pem"},
		{"client cert", &CertRenewalResponse{ClientCertPEM: bad}, "CertRenewalResponse.client_cert_pem"},
		{"ca cert", &CertRenewalResponse{CACertPEM: bad}, "CertRenewalResponse.ca_cert_pem"},
		{"renewal reason", &CertRenewalResponse{Result: ResultError, Reason: bad}, "CertRenewalResponse.reason"},
		{"domain", &RouteAdvertise{Domains: []DomainRoute{{Name: "a"}, {Name: "b\xc3.example"}}}, "RouteAdvertise.domains[1].name"},
		{"target", &ConnectRequest{Target: bad}, "ConnectRequest.target"},
		{"response reason", &ConnectResponse{Result: ResultError, Reason: bad}, "ConnectResponse.reason"},
	}
	for _, tc := range encodeTests {
		out, err := tc.msg.AppendFrame([]byte("x"))
		var inv *InvalidFieldError
		if !errors.As(err, &inv) || inv.Field != tc.field || !errors.Is(err, ErrInvalidField) {
			t.Errorf("encode %s: err = %v", tc.name, err)
		}
		if string(out) != "x" {
			t.Errorf("encode %s: dst changed to %q", tc.name, out)
		}
	}
}

func TestResultFields(t *testing.T) {
	// Unknown result byte on decode.
	_, err := DecodeControl(unhex(t, "05 00 01 02 00 00 00 00"))
	var inv *InvalidFieldError
	if !errors.As(err, &inv) || inv.Field != "CertRenewalResponse.result" {
		t.Fatalf("decode result 2: err = %v", err)
	}
	// Inconsistent messages on encode.
	for _, m := range []encoder{
		&CertRenewalResponse{Result: 2},
		&CertRenewalResponse{Result: ResultSuccess, Reason: "why"},
		&CertRenewalResponse{Result: ResultError, ClientCertPEM: "C"},
		&CertRenewalResponse{Result: ResultError, CACertPEM: "CA"},
		&ConnectResponse{Result: 2},
		&ConnectResponse{Result: ResultSuccess, Reason: "why"},
	} {
		if out, err := m.AppendFrame(nil); !errors.Is(err, ErrInvalidField) || out != nil {
			t.Errorf("%#v: %v, %v", m, out, err)
		}
	}
}

func TestVersionIsReturnedNotChecked(t *testing.T) {
	frame := unhex(t, "00 00 00 0F 02 00 02 00 00 00 00 00 00 00 01 00 00 00 00")
	m, err := NewControlReader(bytes.NewReader(frame)).ReadControl()
	if err != nil {
		t.Fatalf("version 2 rejected by the decoder: %v", err)
	}
	if m.ProtocolVersion() != 2 {
		t.Fatalf("ProtocolVersion() = %d", m.ProtocolVersion())
	}
	err = CheckVersion(m.ProtocolVersion())
	var uv *UnsupportedVersionError
	if !errors.As(err, &uv) || uv.Version != 2 || !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("CheckVersion(2) = %v", err)
	}
	if err.Error() != "unsupported protocol version: 2" {
		t.Fatalf("Error() = %q", err)
	}
	if err := CheckVersion(ProtocolVersion); err != nil {
		t.Fatalf("CheckVersion(1) = %v", err)
	}
	if err := CheckVersion(0); err == nil {
		t.Fatal("CheckVersion(0) = nil")
	}

	resp, err := DecodeConnectResponse(unhex(t, "00 FF FF"))
	if err != nil || resp.Version != 0xFFFF {
		t.Fatalf("ConnectResponse version 0xFFFF: %+v, %v", resp, err)
	}
}

func TestConstants(t *testing.T) {
	if ProtocolVersion != 1 || ALPN != "gw-agent-tunnel/1" {
		t.Fatalf("ProtocolVersion %d, ALPN %q", ProtocolVersion, ALPN)
	}
	if MaxControlPayload != 1048576 || MaxSessionPayload != 65536 || FrameHeaderLen != 4 {
		t.Fatal("limits changed")
	}
}

func TestStringers(t *testing.T) {
	tests := []struct{ got, want string }{
		{TagRouteAdvertise.String(), "RouteAdvertise"},
		{TagHeartbeat.String(), "Heartbeat"},
		{TagHeartbeatAck.String(), "HeartbeatAck"},
		{TagCertRenewalRequest.String(), "CertRenewalRequest"},
		{TagCertRenewalResponse.String(), "CertRenewalResponse"},
		{MessageTag(0).String(), "MessageTag(0x00)"},
		{MessageTag(0xAB).String(), "MessageTag(0xab)"},
		{ResultSuccess.String(), "Success"},
		{ResultError.String(), "Error"},
		{Result(9).String(), "Result(0x09)"},
		{ControlStream.String(), "control"},
		{SessionStream.String(), "session"},
		{StreamKind(5).String(), "StreamKind(5)"},
		{SessionID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF}.String(), "00112233-4455-6677-8899-aabbccddeeff"},
		{SessionID{}.String(), "00000000-0000-0000-0000-000000000000"},
		{(&MessageTooLargeError{Stream: ControlStream, Size: 1048577, Limit: 1048576}).Error(),
			"dataplane: control message payload of 1048577 bytes exceeds the limit of 1048576"},
		{(&TruncatedError{Field: "RouteAdvertise.subnets[3].prefix_len", Need: 1}).Error(),
			"dataplane: truncated message: RouteAdvertise.subnets[3].prefix_len needs 1 bytes, 0 left"},
		{(&InvalidFieldError{Field: "domain", Reason: "empty label"}).Error(), "dataplane: invalid domain: empty label"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	// Each control message reports its own tag.
	for _, m := range []ControlMessage{&RouteAdvertise{}, &Heartbeat{}, &HeartbeatAck{}, &CertRenewalRequest{}, &CertRenewalResponse{}} {
		frame, err := m.AppendFrame(nil)
		if err != nil {
			t.Fatal(err)
		}
		if MessageTag(frame[FrameHeaderLen]) != m.Tag() {
			t.Errorf("%T: Tag() = %v, wire tag %#x", m, m.Tag(), frame[FrameHeaderLen])
		}
	}
}

// TestErrorKindsAreDistinct checks that each typed error matches only its
// own sentinel.
func TestErrorKindsAreDistinct(t *testing.T) {
	errs := []error{
		&UnsupportedVersionError{}, &MessageTooLargeError{}, &TruncatedError{}, &UnknownTagError{}, &InvalidFieldError{},
	}
	sentinels := []error{ErrUnsupportedVersion, ErrMessageTooLarge, ErrTruncated, ErrUnknownTag, ErrInvalidField}
	for i, err := range errs {
		for j, s := range sentinels {
			if got := errors.Is(err, s); got != (i == j) {
				t.Errorf("errors.Is(%T, %v) = %v", err, s, got)
			}
		}
	}
}
