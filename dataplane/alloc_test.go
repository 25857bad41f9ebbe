package dataplane

import (
	"net/netip"
	"strconv"
	"testing"
)

// loopReader returns the same bytes over and over, for readers that run
// many times without re-creating their source.
type loopReader struct {
	b   []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// bigRouteAdvertise has 100 subnets and 10 domains.
func bigRouteAdvertise() *RouteAdvertise {
	m := &RouteAdvertise{Version: ProtocolVersion, Epoch: 42}
	for i := range 100 {
		m.Subnets = append(m.Subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16+i%17))
	}
	for i := range 10 {
		m.Domains = append(m.Domains, DomainRoute{Name: "site" + strconv.Itoa(i) + ".branch.contoso.local", AutoDetected: i == 0})
	}
	return m
}

func TestEncodeAllocs(t *testing.T) {
	msgs := []encoder{bigRouteAdvertise()}
	for _, v := range goldenVectors() {
		msgs = append(msgs, v.msg)
	}
	buf := make([]byte, 0, 4096)
	for _, m := range msgs {
		var err error
		allocs := testing.AllocsPerRun(100, func() { buf, err = m.AppendFrame(buf[:0]) })
		if err != nil {
			t.Fatal(err)
		}
		if allocs != 0 {
			t.Errorf("%T: %v allocations to encode into a reused buffer", m, allocs)
		}
	}
	// Directly on a value, the way callers write it.
	hb := Heartbeat{Version: ProtocolVersion, TimestampMs: 1, ActiveStreamCount: 2}
	if allocs := testing.AllocsPerRun(100, func() { buf, _ = hb.AppendFrame(buf[:0]) }); allocs != 0 {
		t.Errorf("Heartbeat value: %v allocations", allocs)
	}
	resp := ConnectResponse{Version: ProtocolVersion}
	if allocs := testing.AllocsPerRun(100, func() { buf, _ = resp.AppendFrame(buf[:0]) }); allocs != 0 {
		t.Errorf("ConnectResponse value: %v allocations", allocs)
	}
}

func TestReadHeartbeatAllocs(t *testing.T) {
	frame, _ := (&Heartbeat{Version: ProtocolVersion, TimestampMs: 7, ActiveStreamCount: 1}).AppendFrame(nil)
	r := NewControlReader(&loopReader{b: frame})
	var err error
	var m ControlMessage
	allocs := testing.AllocsPerRun(1000, func() { m, err = r.ReadControl() })
	if err != nil || m.(*Heartbeat).TimestampMs != 7 {
		t.Fatalf("ReadControl = %v, %v", m, err)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations to read a Heartbeat", allocs)
	}
}

func TestReadConnectResponseAllocs(t *testing.T) {
	frame, _ := (&ConnectResponse{Version: ProtocolVersion}).AppendFrame(nil)
	src := &loopReader{b: frame}
	r := NewSessionReader(src)
	var err error
	var m ConnectResponse
	allocs := testing.AllocsPerRun(1000, func() {
		r.Reset(src) // one reader serving stream after stream
		m, err = r.ReadConnectResponse()
	})
	if err != nil || m != (ConnectResponse{Version: ProtocolVersion}) {
		t.Fatalf("ReadConnectResponse = %+v, %v", m, err)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations to read a ConnectResponse Success", allocs)
	}
}
