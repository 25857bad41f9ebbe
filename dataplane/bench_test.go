package dataplane

import "testing"

func benchmarkEncode(b *testing.B, m encoder) {
	buf, err := m.AppendFrame(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = m.AppendFrame(buf[:0])
	}
}

func benchmarkDecode(b *testing.B, k msgKind, m encoder) {
	frame, err := m.AppendFrame(nil)
	if err != nil {
		b.Fatal(err)
	}
	payload := frame[FrameHeaderLen:]
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodePayload(k, payload); err != nil {
			b.Fatal(err)
		}
	}
}

var (
	benchHeartbeat = &Heartbeat{Version: ProtocolVersion, TimestampMs: 1700000000000, ActiveStreamCount: 12}
	benchRequest   = &ConnectRequest{Version: ProtocolVersion, SessionID: SessionID{1, 2, 3}, Target: "db01.finance.contoso.local:5432"}
	benchResponse  = &ConnectResponse{Version: ProtocolVersion}
)

func BenchmarkEncodeHeartbeat(b *testing.B)       { benchmarkEncode(b, benchHeartbeat) }
func BenchmarkEncodeRouteAdvertise(b *testing.B)  { benchmarkEncode(b, bigRouteAdvertise()) }
func BenchmarkEncodeConnectRequest(b *testing.B)  { benchmarkEncode(b, benchRequest) }
func BenchmarkEncodeConnectResponse(b *testing.B) { benchmarkEncode(b, benchResponse) }

func BenchmarkDecodeHeartbeat(b *testing.B) { benchmarkDecode(b, kindControl, benchHeartbeat) }
func BenchmarkDecodeRouteAdvertise(b *testing.B) {
	benchmarkDecode(b, kindControl, bigRouteAdvertise())
}
func BenchmarkDecodeConnectRequest(b *testing.B) {
	benchmarkDecode(b, kindConnectRequest, benchRequest)
}

func BenchmarkReadHeartbeat(b *testing.B) {
	frame, _ := benchHeartbeat.AppendFrame(nil)
	r := NewControlReader(&loopReader{b: frame})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadControl(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadRouteAdvertise(b *testing.B) {
	frame, _ := bigRouteAdvertise().AppendFrame(nil)
	r := NewControlReader(&loopReader{b: frame})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadControl(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadConnectRequest(b *testing.B) {
	frame, _ := benchRequest.AppendFrame(nil)
	src := &loopReader{b: frame}
	r := NewSessionReader(src)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(src)
		if _, err := r.ReadConnectRequest(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadConnectResponse(b *testing.B) {
	frame, _ := benchResponse.AppendFrame(nil)
	src := &loopReader{b: frame}
	r := NewSessionReader(src)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(src)
		if _, err := r.ReadConnectResponse(); err != nil {
			b.Fatal(err)
		}
	}
}
