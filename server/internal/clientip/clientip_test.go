package clientip

import (
	"context"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

type fakeAddr struct{ network, s string }

func (a fakeAddr) Network() string { return a.network }
func (a fakeAddr) String() string  { return a.s }

func TestFromContext(t *testing.T) {
	tcp := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}
	cases := []struct {
		name string
		addr net.Addr
		xff  []string
		want string
	}{
		{"direct", tcp, nil, "203.0.113.7"},
		{"direct ignores xff", tcp, []string{"198.51.100.1"}, "203.0.113.7"},
		{"direct v6", &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, nil, "2001:db8::1"},
		{"direct v4-mapped", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}, nil, "192.0.2.1"},
		{"in-process uses last xff", fakeAddr{"bufconn", "bufconn"}, []string{"198.51.100.9, 192.0.2.44"}, "192.0.2.44"},
		{"in-process no xff", fakeAddr{"bufconn", "bufconn"}, nil, "invalid IP"},
		{"no peer", nil, nil, "invalid IP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.addr != nil {
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: tc.addr})
			}
			for _, v := range tc.xff {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-forwarded-for", v))
			}
			if got := FromContext(ctx).String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTrustedProxies(t *testing.T) {
	trusted, err := ParseTrusted([]string{"10.0.0.0/8", "2001:db8:ffff::1"})
	if err != nil {
		t.Fatal(err)
	}
	r := Resolver{Trusted: trusted}
	cases := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer ignores xff", "203.0.113.7:1", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted peer, one hop", "10.1.2.3:1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client-forged entries before the proxy's are not believed", "10.1.2.3:1", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"two trusted hops", "10.1.2.3:1", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"trusted v6 proxy", "[2001:db8:ffff::1]:1", []string{"2001:db8::7"}, "2001:db8::7"},
		{"garbage entry stops at the proxy", "10.1.2.3:1", []string{"not-an-ip"}, "10.1.2.3"},
		{"trusted peer, no header", "10.1.2.3:1", nil, "10.1.2.3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			if got := r.FromRequest(req).String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			// Without trusted proxies the peer is always the client.
			if got, want := (Resolver{}).FromRequest(req), addrOf(tc.peer); got != want {
				t.Fatalf("zero Resolver: got %s, want %s", got, want)
			}
		})
	}
	if _, err := ParseTrusted([]string{"10.0.0.0/33"}); err == nil {
		t.Fatal("bad prefix accepted")
	}
	// In-process REST: the last entry is the HTTP peer (a trusted proxy),
	// so the entry before it is the client.
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: fakeAddr{"bufconn", "bufconn"}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-forwarded-for", "198.51.100.9, 10.0.0.5"))
	if got := r.FromContext(ctx).String(); got != "198.51.100.9" {
		t.Fatalf("in-process behind a trusted proxy: %s", got)
	}
	if got := (Resolver{}).FromContext(ctx).String(); got != "10.0.0.5" {
		t.Fatalf("in-process without trusted proxies: %s", got)
	}
}
