package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/reach"
)

// roundTrip sends payload on an established session stream whose target
// echoes, half-closes, and checks the echo and the clean end.
func roundTrip(t *testing.T, tn *tunnel, target string, payload []byte) {
	t.Helper()
	s, resp := tn.connect(t, target)
	wantSuccess(t, resp)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(payload)
		if err == nil {
			err = s.Close()
		}
		errc <- err
	}()
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(payload))
	}
}

func TestSessionRoundTrip(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	counters := new(relay.Counters)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}, Counters: counters})

	payload := make([]byte, 1<<20+123)
	_, _ = rand.Read(payload)
	roundTrip(t, tn, echoAddr.String(), payload)
	tn.waitServed(t)

	if got, want := counters.AToB(), int64(len(payload)); got != want {
		t.Errorf("Counters.AToB = %d, want %d", got, want)
	}
	if got, want := counters.BToA(), int64(len(payload)); got != want {
		t.Errorf("Counters.BToA = %d, want %d", got, want)
	}
	if n := tn.h.Active(); n != 0 {
		t.Errorf("Active() = %d after the session", n)
	}
}

// TestSessionHalfClose: the gateway closes its send side first; the target
// reads EOF, then keeps sending, and all of it reaches the gateway.
func TestSessionHalfClose(t *testing.T) {
	tail := bytes.Repeat([]byte("after eof "), 50_000)
	addr := testtarget.Listen(t, "127.0.0.1:0", func(c *net.TCPConn) {
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		if _, err := c.Write(append([]byte("got "+strconv.Quote(string(got))+"; "), tail...)); err != nil {
			return
		}
		_ = c.CloseWrite()
	})
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.1/32")}})

	s, resp := tn.connect(t, addr.String())
	wantSuccess(t, resp)
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // FIN: the gateway's half-close
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	want := append([]byte(`got "hello"; `), tail...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes (%.40q...), want %d", len(got), got, len(want))
	}
	tn.waitServed(t)
}

func TestSessionRefused(t *testing.T) {
	tests := []struct {
		name    string
		subnets []string
		target  string
		reason  string
	}{
		{"outside subnets", []string{"192.168.0.0/24"}, "10.0.0.9:22", "target 10.0.0.9:22 is not in advertised subnets"},
		{"no routes", nil, "10.0.0.9:22", "target 10.0.0.9:22 is not in advertised subnets"},
		{"loopback not explicit", []string{"10.0.0.0/8"}, "127.0.0.1:22", "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"0.0.0.0/0 is not explicit", []string{"0.0.0.0/0"}, "127.0.0.1:22", "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"127.0.0.1/32 does not cover 127.0.0.2", []string{"127.0.0.1/32"}, "127.0.0.2:22", "target 127.0.0.2:22 is loopback and not explicitly advertised"},
		{"metadata", []string{"0.0.0.0/0", "169.254.0.0/16"}, "169.254.169.254:80", "target 169.254.169.254:80 is the cloud metadata address and not explicitly advertised"},
		{"link-local", []string{"0.0.0.0/0"}, "169.254.10.1:80", "target 169.254.10.1:80 is link-local and not explicitly advertised"},
		{"IPv6 loopback", []string{"0.0.0.0/0", "127.0.0.0/8"}, "[::1]:22", "target [::1]:22 is loopback and not explicitly advertised"},
		{"IPv6 address", []string{"0.0.0.0/0"}, "[2001:db8::1]:22", "target [2001:db8::1]:22 is not in advertised subnets"},
		{"mapped loopback", []string{"0.0.0.0/0"}, "[::ffff:127.0.0.1]:22", "target 127.0.0.1:22 is loopback and not explicitly advertised"},
		{"missing port", []string{"0.0.0.0/0"}, "x", `invalid target "x": missing port`},
		{"port zero", []string{"127.0.0.0/8"}, "127.0.0.1:0", `invalid target "127.0.0.1:0": port 0 out of range 1-65535`},
		{"port too big", []string{"127.0.0.0/8"}, "127.0.0.1:65536", `invalid target "127.0.0.1:65536": port 65536 out of range 1-65535`},
		{"unbracketed IPv6", nil, "2001:db8::1:22", `invalid target "2001:db8::1:22": IPv6 address must be in brackets`},
		{"empty", nil, "", `invalid target: empty`},
		{"numeric name", []string{"127.0.0.0/8"}, "2130706433:22", `invalid target "2130706433:22": invalid host name "2130706433"`},
	}
	tn := newTunnel(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn.h.SetRoutes(reach.Routes{Subnets: prefixes(t, tc.subnets...)})
			s, resp := tn.connect(t, tc.target)
			wantRefused(t, s, resp, tc.reason)
			tn.waitServed(t)
		})
	}
}

func TestSessionLoopbackExplicit(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	for _, subnet := range []string{"127.0.0.0/8", "127.0.0.1/32"} {
		t.Run(subnet, func(t *testing.T) {
			tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, subnet)}})
			roundTrip(t, tn, echoAddr.String(), []byte("ping"))
		})
	}
}

// TestSessionNames covers host-name targets, resolved by a fake DNS server
// (and /etc/hosts for localhost). The tests' connect hook stops an allowed
// non-loopback address before connect(2), so its reason shows the policy
// let it through.
func TestSessionNames(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	port := strconv.Itoa(int(echoAddr.Port()))
	resolver := newResolver(t, map[string][]netip.Addr{
		"localhost":           {netip.MustParseAddr("127.0.0.1")},
		"db.contoso.test":     {netip.MustParseAddr("127.0.0.1")},
		"contoso.test":        {netip.MustParseAddr("127.0.0.1")},
		"app.contoso.test":    {netip.MustParseAddr("203.0.113.5")},
		"v6.contoso.test":     {netip.MustParseAddr("2001:db8::5")},
		"v6loop.contoso.test": {netip.MustParseAddr("::1")},
		"meta.contoso.test":   {netip.MustParseAddr("169.254.169.254")},
		"db.other.test":       {netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::9")},
		"in.other.test":       {netip.MustParseAddr("10.1.2.3")},
		"mixed.other.test":    {netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("127.0.0.1")},
	})
	tests := []struct {
		name    string
		routes  reach.Routes
		target  string
		reason  string // "" for a successful echo round trip
		pattern string // a regexp for the reason instead, when the address order is not fixed
	}{
		{name: "domain name to loopback, not explicit",
			routes: reach.Routes{Domains: []string{"contoso.test"}}, target: "db.contoso.test:" + port,
			reason: "db.contoso.test resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised"},
		{name: "domain name to loopback, explicit",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "127.0.0.0/8")}, target: "db.contoso.test:" + port},
		{name: "domain name matches case-insensitively",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "127.0.0.1/32")}, target: "DB.Contoso.TEST:" + port},
		{name: "domain itself",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "127.0.0.0/8")}, target: "contoso.test:" + port},
		{name: "localhost advertised as a domain",
			routes: reach.Routes{Domains: []string{"localhost"}}, target: "localhost:" + port,
			pattern: `^localhost resolves only to refused addresses: (127\.0\.0\.1|::1) is loopback and not explicitly advertised$`},
		{name: "localhost explicit",
			routes: reach.Routes{Domains: []string{"localhost"}, Subnets: prefixes(t, "127.0.0.0/8")}, target: "localhost:" + port},
		{name: "domain name to any address",
			routes: reach.Routes{Domains: []string{"contoso.test"}}, target: "app.contoso.test:22",
			reason: "dial 203.0.113.5:22: " + errSuppressed.Error()},
		{name: "wildcard domain to any address",
			routes: reach.Routes{Domains: []string{"*.contoso.test"}}, target: "app.contoso.test:22",
			reason: "dial 203.0.113.5:22: " + errSuppressed.Error()},
		{name: "wildcard does not cover the domain itself",
			routes: reach.Routes{Domains: []string{"*.contoso.test"}, Subnets: prefixes(t, "10.0.0.0/8")}, target: "contoso.test:22",
			reason: "contoso.test resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised"},
		{name: "domain name to IPv6",
			routes: reach.Routes{Domains: []string{"contoso.test"}}, target: "v6.contoso.test:22",
			reason: "dial [2001:db8::5]:22: " + errSuppressed.Error()},
		{name: "domain name to IPv6 loopback",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "127.0.0.0/8")}, target: "v6loop.contoso.test:22",
			reason: "v6loop.contoso.test resolves only to refused addresses: ::1 is loopback and not explicitly advertised"},
		{name: "domain name to metadata",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "169.254.0.0/16")}, target: "meta.contoso.test:80",
			reason: "meta.contoso.test resolves only to refused addresses: 169.254.169.254 is the cloud metadata address and not explicitly advertised"},
		{name: "other name outside subnets",
			routes: reach.Routes{Domains: []string{"contoso.test"}, Subnets: prefixes(t, "10.1.0.0/16")}, target: "db.other.test:22",
			reason: "db.other.test resolves only to addresses outside advertised subnets"},
		{name: "other name inside subnets",
			routes: reach.Routes{Subnets: prefixes(t, "10.1.0.0/16")}, target: "in.other.test:22",
			reason: "dial 10.1.2.3:22: " + errSuppressed.Error()},
		{name: "other name to loopback and outside",
			routes: reach.Routes{Subnets: prefixes(t, "10.1.0.0/16")}, target: "mixed.other.test:22",
			reason: "mixed.other.test resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised"},
		{name: "other name, loopback explicit",
			routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}, target: "mixed.other.test:" + port},
		{name: "other name, allowed address closed",
			routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}, target: "mixed.other.test:" + strconv.Itoa(int(testtarget.ClosedAddr(t).Port())),
			pattern: `^dial (127\.0\.0\.1:\d+: connection refused|mixed\.other\.test:\d+: could not reach 127\.0\.0\.1; its other addresses are refused by the routes)$`},
		{name: "unknown name",
			routes: reach.Routes{Domains: []string{"contoso.test"}}, target: "missing.contoso.test:22",
			reason: "cannot resolve missing.contoso.test: no such host"},
	}
	tn := newTunnel(t, Config{Resolver: resolver})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn.h.SetRoutes(tc.routes)
			if tc.reason == "" && tc.pattern == "" {
				roundTrip(t, tn, tc.target, []byte("hello "+tc.target))
				tn.waitServed(t)
				return
			}
			s, resp := tn.connect(t, tc.target)
			if tc.pattern != "" {
				if resp.Result != dataplane.ResultError || !regexp.MustCompile(tc.pattern).MatchString(resp.Reason) {
					t.Fatalf("ConnectResponse = %v %q, want Error matching %s", resp.Result, resp.Reason, tc.pattern)
				}
				tn.waitServed(t)
				return
			}
			wantRefused(t, s, resp, tc.reason)
			tn.waitServed(t)
		})
	}
}

// TestSessionIPv6Loopback: ::1 is never reachable, even with a listener
// there and every route advertised; a name that also resolves to an allowed
// 127.0.0.1 is reached there (Happy Eyeballs moves on at once).
func TestSessionIPv6Loopback(t *testing.T) {
	skipWithoutIPv6(t)
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	port := strconv.Itoa(int(echoAddr.Port()))
	var decoyHit atomic.Bool
	ln, err := net.Listen("tcp6", "[::1]:"+port)
	if err != nil {
		t.Skipf("cannot listen on [::1]:%s too: %v", port, err)
	}
	ln.Close() // the port is free on ::1; take it with a tracked listener
	decoy := testtarget.Listen(t, "[::1]:"+port, func(*net.TCPConn) { decoyHit.Store(true) })

	resolver := newResolver(t, map[string][]netip.Addr{
		"v6.contoso.test":   {netip.MustParseAddr("::1")},
		"dual.contoso.test": {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")},
	})
	tn := newTunnel(t, Config{Resolver: resolver, Routes: reach.Routes{Subnets: prefixes(t, "0.0.0.0/0", "127.0.0.0/8"), Domains: []string{"contoso.test"}}})

	s, resp := tn.connect(t, decoy.String())
	wantRefused(t, s, resp, "target "+decoy.String()+" is loopback and not explicitly advertised")
	s, resp = tn.connect(t, "v6.contoso.test:"+port)
	wantRefused(t, s, resp, "v6.contoso.test resolves only to refused addresses: ::1 is loopback and not explicitly advertised")
	roundTrip(t, tn, "dual.contoso.test:"+port, []byte("over IPv4"))
	if decoyHit.Load() {
		t.Fatal("a connection reached [::1]")
	}
}

func TestSessionUnsupportedVersion(t *testing.T) {
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "0.0.0.0/0")}})
	for _, v := range []uint16{0, 2, 65535} {
		s := tn.open(t)
		writeRequest(t, s, dataplane.ConnectRequest{Version: v, Target: "10.0.0.1:22"})
		wantRefused(t, s, readResponse(t, s), fmt.Sprintf("unsupported protocol version: %d", v))
		tn.waitServed(t)
	}
}

func TestSessionDraining(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}})

	tn.h.SetDraining(true)
	s, resp := tn.connect(t, echoAddr.String())
	wantRefused(t, s, resp, "agent draining")
	tn.waitServed(t)

	tn.h.SetDraining(false)
	roundTrip(t, tn, echoAddr.String(), []byte("back"))
}

// TestSessionDrainingKeepsLive: draining refuses new sessions only.
func TestSessionDrainingKeepsLive(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}})
	live, resp := tn.connect(t, echoAddr.String())
	wantSuccess(t, resp)
	tn.h.SetDraining(true)
	if _, err := live.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	_ = live.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(live, buf); err != nil || string(buf) != "still" {
		t.Fatalf("live session after SetDraining: %q, %v", buf, err)
	}
}

func TestSessionDialRefused(t *testing.T) {
	closed := testtarget.ClosedAddr(t).String()
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}})
	s, resp := tn.connect(t, closed)
	wantRefused(t, s, resp, "dial "+closed+": connection refused")
}

func TestSessionBadRequest(t *testing.T) {
	tests := []struct {
		name string
		send []byte
	}{
		{"truncated header", []byte{0, 0}},
		{"truncated payload", []byte{0, 0, 0, 20, 0x01, 0, 1}},
		{"unknown tag", []byte{0, 0, 0, 3, 0x09, 0, 1}},
		{"too large", []byte{0, 1, 0, 1, 0x01}},
		{"not UTF-8", append([]byte{0, 0, 0, 24, 0x01, 0, 1}, append(make([]byte, 16), 0, 0, 0, 1, 0xff)...)},
	}
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "0.0.0.0/0")}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tn.open(t)
			if _, err := s.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			wantReset(t, s, relay.ErrorCodeReset)
			tn.waitServed(t)
		})
	}
}

func TestSessionReadTimeout(t *testing.T) {
	tn := newTunnel(t, Config{ReadTimeout: 100 * time.Millisecond, Routes: reach.Routes{Subnets: prefixes(t, "0.0.0.0/0")}})
	s := tn.open(t)
	if _, err := s.Write([]byte{0, 0}); err != nil { // the agent sees the stream but never a whole request
		t.Fatal(err)
	}
	start := time.Now()
	wantReset(t, s, relay.ErrorCodeReset)
	tn.waitServed(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("reset after %v, want about 100ms", d)
	}
	if n := tn.h.Active(); n != 0 {
		t.Errorf("Active() = %d", n)
	}
}

func TestSetRoutes(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "10.0.0.0/8")}})

	s, resp := tn.connect(t, echoAddr.String())
	wantRefused(t, s, resp, "target "+echoAddr.String()+" is loopback and not explicitly advertised")
	tn.waitServed(t)

	tn.h.SetRoutes(reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")})
	live, resp := tn.connect(t, echoAddr.String())
	wantSuccess(t, resp)

	// Withdrawing the route refuses the next session; the live one goes on.
	tn.h.SetRoutes(reach.Routes{})
	s, resp = tn.connect(t, echoAddr.String())
	wantRefused(t, s, resp, "target "+echoAddr.String()+" is loopback and not explicitly advertised")
	if _, err := live.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = live.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(live, make([]byte, 1)); err != nil {
		t.Fatalf("live session after SetRoutes: %v", err)
	}
}

func TestActive(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}})
	if n := tn.h.Active(); n != 0 {
		t.Fatalf("Active() = %d before any session", n)
	}

	// A stream waiting for its ConnectRequest counts.
	pending := tn.open(t)
	if _, err := pending.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Active() == 1", func() bool { return tn.h.Active() == 1 })

	a, resp := tn.connect(t, echoAddr.String())
	wantSuccess(t, resp)
	b, resp := tn.connect(t, echoAddr.String())
	wantSuccess(t, resp)
	waitFor(t, "Active() == 3", func() bool { return tn.h.Active() == 3 })

	pending.CancelWrite(0)
	pending.CancelRead(0)
	waitFor(t, "Active() == 2", func() bool { return tn.h.Active() == 2 })

	for _, s := range []*quic.Stream{a, b} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_ = s.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadAll(s); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "Active() == 0", func() bool { return tn.h.Active() == 0 })
}

// TestServeContext: the end of Serve's context aborts a session, both while
// it waits for its request and while it relays.
func TestServeContext(t *testing.T) {
	echoAddr := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo)
	tn := newTunnel(t, Config{Routes: reach.Routes{Subnets: prefixes(t, "127.0.0.0/8")}})

	waiting := tn.open(t)
	if _, err := waiting.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	relaying, resp := tn.connect(t, echoAddr.String())
	wantSuccess(t, resp)
	waitFor(t, "Active() == 2", func() bool { return tn.h.Active() == 2 })

	tn.cancel()
	wantReset(t, waiting, relay.ErrorCodeCanceled)
	wantReset(t, relaying, relay.ErrorCodeCanceled)
	tn.waitServed(t)
	tn.waitServed(t)
	if n := tn.h.Active(); n != 0 {
		t.Errorf("Active() = %d after cancel", n)
	}
}

// TestServeContextWhileDialing: a dial in progress is abandoned when ctx
// ends. The dial waits on the fake resolver, which never answers.
func TestServeContextWhileDialing(t *testing.T) {
	dialing := make(chan struct{}, 1)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		select {
		case dialing <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	tn := newTunnel(t, Config{Resolver: resolver, Routes: reach.Routes{Domains: []string{"contoso.test"}}})
	s := tn.open(t)
	writeRequest(t, s, dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, Target: "slow.contoso.test:22"})
	select {
	case <-dialing:
	case <-time.After(testTimeout):
		t.Fatal("the resolver was never asked")
	}
	tn.cancel()
	wantReset(t, s, relay.ErrorCodeCanceled)
	tn.waitServed(t)
}

func TestNewDefaults(t *testing.T) {
	h := New(Config{DialTimeout: -1})
	if h.cfg.DialTimeout != DefaultDialTimeout || h.cfg.ReadTimeout != DefaultReadTimeout || h.log == nil || h.cfg.OwnAddrs == nil {
		t.Fatalf("defaults not applied: %+v", h.cfg)
	}
	if h.dialer.Timeout != DefaultDialTimeout {
		t.Fatalf("dial timeout %v", h.dialer.Timeout)
	}
	if h.Active() != 0 {
		t.Fatal("Active() != 0")
	}
	// Invalid entries are dropped, valid ones kept.
	h.SetRoutes(reach.Routes{Subnets: prefixes(t, "2001:db8::/32", "10.0.0.0/8"), Domains: []string{"a..b", "ok.test"}})
	table := h.routes.Load()
	if table.Check(netip.MustParseAddrPort("10.1.2.3:22"), false) != nil || !table.MatchDomain("ok.test") ||
		table.Check(netip.MustParseAddrPort("[2001:db8::1]:22"), false) == nil || table.MatchDomain("a..b") {
		t.Fatalf("compiled %+v", table)
	}
}

// TestSessionOwnAddress: an address of this host (Config.OwnAddrs) is
// refused unless advertised as a /32, and SetRoutes lists them again. The
// connect hook stops an allowed non-loopback address before connect(2).
func TestSessionOwnAddress(t *testing.T) {
	var (
		mu    sync.Mutex
		own   = []netip.Addr{netip.MustParseAddr("10.44.0.5")}
		calls int
	)
	resolver := newResolver(t, map[string][]netip.Addr{
		"self.contoso.test": {netip.MustParseAddr("10.44.0.5")},
		"v6.contoso.test":   {netip.MustParseAddr("2001:db8::44")},
	})
	tn := newTunnel(t, Config{Resolver: resolver, OwnAddrs: func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return own, nil
	}})
	tests := []struct {
		name   string
		routes reach.Routes
		target string
		reason string
	}{
		{"own address in a subnet", reach.Routes{Subnets: prefixes(t, "10.0.0.0/8")}, "10.44.0.5:22",
			"target 10.44.0.5:22 is an address of this host and not explicitly advertised"},
		{"own address through a domain", reach.Routes{Domains: []string{"contoso.test"}}, "self.contoso.test:22",
			"self.contoso.test resolves only to refused addresses: 10.44.0.5 is an address of this host and not explicitly advertised"},
		{"own address explicit", reach.Routes{Subnets: prefixes(t, "10.44.0.5/32")}, "10.44.0.5:22",
			"dial 10.44.0.5:22: " + errSuppressed.Error()},
		{"neighbour", reach.Routes{Subnets: prefixes(t, "10.0.0.0/8")}, "10.44.0.6:22",
			"dial 10.44.0.6:22: " + errSuppressed.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn.h.SetRoutes(tc.routes)
			s, resp := tn.connect(t, tc.target)
			wantRefused(t, s, resp, tc.reason)
			tn.waitServed(t)
		})
	}

	// The addresses are listed again with the next routes.
	mu.Lock()
	own = []netip.Addr{netip.MustParseAddr("2001:db8::44"), netip.MustParseAddr("127.0.0.1")}
	before := calls
	mu.Unlock()
	tn.h.SetRoutes(reach.Routes{Subnets: prefixes(t, "10.0.0.0/8"), Domains: []string{"contoso.test"}})
	s, resp := tn.connect(t, "10.44.0.5:22")
	wantRefused(t, s, resp, "dial 10.44.0.5:22: "+errSuppressed.Error())
	s, resp = tn.connect(t, "v6.contoso.test:22")
	wantRefused(t, s, resp, "v6.contoso.test resolves only to refused addresses: 2001:db8::44 is an address of this host and not explicitly advertised")
	mu.Lock()
	defer mu.Unlock()
	if calls != before+1 {
		t.Fatalf("OwnAddrs called %d times by SetRoutes, want 1", calls-before)
	}
}

// TestSessionOwnAddrsError: when the addresses of this host cannot be
// listed, sessions go on without that protection.
func TestSessionOwnAddrsError(t *testing.T) {
	tn := newTunnel(t, Config{
		Routes:   reach.Routes{Subnets: prefixes(t, "10.0.0.0/8")},
		OwnAddrs: func() ([]netip.Addr, error) { return nil, errors.New("test: no interfaces") },
	})
	s, resp := tn.connect(t, "10.44.0.5:22")
	wantRefused(t, s, resp, "dial 10.44.0.5:22: "+errSuppressed.Error())
}
