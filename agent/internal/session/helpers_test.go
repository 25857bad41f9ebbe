package session

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait of a test.
const testTimeout = 10 * time.Second

// errSuppressed is what the tests' connect hook returns for an address the
// routes allow but that is not a loopback address: tests never send a packet
// anywhere but 127.0.0.1 and ::1.
var errSuppressed = errors.New("test: connect suppressed")

// loopbackOnly is the connect hook (reach.Dialer.Control) every test
// Handler gets.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return errSuppressed
	}
	return nil
}

// testLogger routes a Handler's logs to t.Logf.
func testLogger(t *testing.T) hclog.Logger {
	return testlog.Logger(t, "test")
}

// testTLS returns a server config with a fresh self-signed ECDSA P-256
// certificate for 127.0.0.1 and a client config that trusts only it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	cert, roots := testtls.SelfSigned(t, "session test gateway")
	server = transport.ServerTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	client = transport.ClientTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	return server, client
}

// tunnel is a QUIC connection on loopback between a "gateway" (the
// listener, which opens session streams) and an "agent" whose accept loop
// hands every stream to a Handler's Serve.
type tunnel struct {
	h      *Handler
	gw     *quic.Conn
	cancel context.CancelFunc // ends the agent's accept loop and every Serve
	served chan struct{}      // receives a value each time a Serve returns
}

// testOwnAddrs stand for the addresses of this host in a test Handler, in
// place of the real ones, so that what the tests see does not depend on the
// machine's interfaces. 127.0.0.1 stays loopback: 127.0.0.0/8 opens it.
var testOwnAddrs = []netip.Addr{netip.MustParseAddr("10.44.0.5"), netip.MustParseAddr("2001:db8::44"), netip.MustParseAddr("127.0.0.1")}

// newTunnel builds a Handler from cfg (logging to t, connect hook
// loopbackOnly, testOwnAddrs unless cfg has OwnAddrs) and serves it on a
// fresh tunnel, torn down at cleanup after every Serve has returned.
func newTunnel(t *testing.T, cfg Config) *tunnel {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.OwnAddrs == nil {
		cfg.OwnAddrs = func() ([]netip.Addr, error) { return testOwnAddrs, nil }
	}
	h := New(cfg)
	h.dialer.Control = loopbackOnly

	serverTLS, clientTLS := testTLS(t)
	conf := transport.Config{}.QUIC()
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	dialCtx, dialCancel := context.WithTimeout(context.Background(), testTimeout)
	defer dialCancel()
	agentConn, err := quic.DialAddr(dialCtx, ln.Addr().String(), clientTLS, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agentConn.CloseWithError(0, "test done") })
	gwConn, err := ln.Accept(dialCtx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gwConn.CloseWithError(0, "test done") })

	ctx, cancel := context.WithCancel(context.Background())
	tn := &tunnel{h: h, gw: gwConn, cancel: cancel, served: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			s, err := agentConn.AcceptStream(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				h.Serve(ctx, s)
				select {
				case tn.served <- struct{}{}:
				default:
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if n := h.Active(); n != 0 {
			t.Errorf("Active() = %d after every Serve returned", n)
		}
	})
	return tn
}

// open opens a session stream on the gateway side; it is reset at cleanup.
func (tn *tunnel) open(t *testing.T) *quic.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := tn.gw.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.CancelRead(0)
		s.CancelWrite(0)
	})
	return s
}

// connect opens a stream, sends a version-1 ConnectRequest for target and
// returns the stream and the agent's answer.
func (tn *tunnel) connect(t *testing.T, target string) (*quic.Stream, dataplane.ConnectResponse) {
	t.Helper()
	s := tn.open(t)
	writeRequest(t, s, dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: dataplane.SessionID{0x5e, 0x55}, Target: target})
	return s, readResponse(t, s)
}

// waitServed waits until a Serve of the tunnel has returned.
func (tn *tunnel) waitServed(t *testing.T) {
	t.Helper()
	select {
	case <-tn.served:
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
}

// writeRequest writes one framed ConnectRequest on s.
func writeRequest(t *testing.T, s *quic.Stream, req dataplane.ConnectRequest) {
	t.Helper()
	frame, err := req.AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
}

// readResponse reads the agent's ConnectResponse from s.
func readResponse(t *testing.T, s *quic.Stream) dataplane.ConnectResponse {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	defer s.SetReadDeadline(time.Time{})
	resp, err := dataplane.NewSessionReader(s).ReadConnectResponse()
	if err != nil {
		t.Fatalf("read ConnectResponse: %v", err)
	}
	if resp.Version != dataplane.ProtocolVersion {
		t.Errorf("ConnectResponse version %d, want %d", resp.Version, dataplane.ProtocolVersion)
	}
	return resp
}

// wantRefused checks that resp is an Error with exactly reason and that the
// agent then ends the stream cleanly (EOF, no reset).
func wantRefused(t *testing.T, s *quic.Stream, resp dataplane.ConnectResponse, reason string) {
	t.Helper()
	if resp.Result != dataplane.ResultError || resp.Reason != reason {
		t.Fatalf("ConnectResponse = %v %q, want Error %q", resp.Result, resp.Reason, reason)
	}
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the Error: read %d, %v; want 0, EOF", n, err)
	}
}

// wantSuccess checks that resp is a Success.
func wantSuccess(t *testing.T, resp dataplane.ConnectResponse) {
	t.Helper()
	if resp.Result != dataplane.ResultSuccess {
		t.Fatalf("ConnectResponse = %v %q, want Success", resp.Result, resp.Reason)
	}
}

// wantReset checks that reading s fails with a stream reset carrying code.
func wantReset(t *testing.T, s *quic.Stream, code quic.StreamErrorCode) {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.ReadAll(s)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != code || !se.Remote {
		t.Fatalf("read: %v; want a remote stream reset with code %d", err, code)
	}
}

// skipWithoutIPv6 skips the test when ::1 cannot be listened on.
func skipWithoutIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}

// fakeDNS answers A and AAAA queries from a fixed table, NXDOMAIN for names
// it does not know. The net.Resolver it backs dials it over net.Pipe, so no
// socket is involved; the Go resolver reads /etc/hosts first.
type fakeDNS struct {
	records map[string][]netip.Addr // lower-case names without trailing dot
	wg      sync.WaitGroup
}

// newResolver returns a pure-Go resolver whose DNS server is a fakeDNS
// holding records.
func newResolver(t *testing.T, records map[string][]netip.Addr) *net.Resolver {
	f := &fakeDNS{records: records}
	t.Cleanup(f.wg.Wait)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			f.wg.Go(func() {
				defer server.Close()
				f.serve(server)
			})
			return client, nil
		},
	}
}

// serve answers one query in DNS-over-TCP framing (a net.Pipe is not a
// PacketConn, so the Go resolver uses the stream format on it).
func (f *fakeDNS) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return
	}
	q := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, q); err != nil {
		return
	}
	resp := f.answer(q)
	if resp == nil {
		return
	}
	_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
}

// DNS constants the fake needs (RFC 1035, RFC 3596).
const (
	dnsHeaderLen   = 12
	dnsTypeA       = 1
	dnsTypeAAAA    = 28
	dnsClassIN     = 1
	dnsFlagQR      = 0x8000
	dnsFlagAA      = 0x0400
	dnsFlagRD      = 0x0100
	dnsFlagRA      = 0x0080
	dnsRcodeNXName = 3
)

// answer builds the response to query q, or nil for a query it cannot parse.
func (f *fakeDNS) answer(q []byte) []byte {
	if len(q) < dnsHeaderLen {
		return nil
	}
	off := dnsHeaderLen
	var labels []string
	for {
		if off >= len(q) {
			return nil
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[off:off+l])))
		off += l
	}
	if off+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[off:])
	question := q[dnsHeaderLen : off+4]

	addrs, known := f.records[strings.Join(labels, ".")]
	flags := uint16(dnsFlagQR|dnsFlagAA|dnsFlagRA) | binary.BigEndian.Uint16(q[2:])&dnsFlagRD
	if !known {
		flags |= dnsRcodeNXName
	}
	var rrs [][]byte
	for _, a := range addrs {
		if (qtype == dnsTypeA && a.Is4()) || (qtype == dnsTypeAAAA && a.Is6()) {
			rrs = append(rrs, a.AsSlice())
		}
	}
	resp := append([]byte(nil), q[0:2]...) // ID
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1) // questions
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(rrs)))
	resp = binary.BigEndian.AppendUint16(resp, 0) // authority
	resp = binary.BigEndian.AppendUint16(resp, 0) // additional
	resp = append(resp, question...)
	for _, rdata := range rrs {
		resp = append(resp, 0xC0, dnsHeaderLen) // pointer to the question's name
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, dnsClassIN)
		resp = binary.BigEndian.AppendUint32(resp, 60) // TTL
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	return resp
}

// waitFor polls cond until it holds or testTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// prefixes parses CIDRs.
func prefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	return ps
}
