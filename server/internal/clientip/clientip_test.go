package clientip

import (
	"context"
	"net"
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
