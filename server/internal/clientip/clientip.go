// Package clientip finds the network address of the client behind a gRPC call,
// whether it came straight over the TLS port or through the in-process REST
// gateway (which records the HTTP peer in x-forwarded-for).
package clientip

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// inProcessNetwork is the Network() of bufconn addresses: calls from the REST gateway.
const inProcessNetwork = "bufconn"

// FromContext returns the client's IP address, or the zero Addr when unknown.
// x-forwarded-for is trusted only on in-process calls, and only its last entry,
// which the REST gateway itself appended from the HTTP connection.
func FromContext(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if p.Addr.Network() == inProcessNetwork {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("x-forwarded-for")
		if len(vals) == 0 {
			return netip.Addr{}
		}
		entries := strings.Split(vals[len(vals)-1], ",")
		a, _ := netip.ParseAddr(strings.TrimSpace(entries[len(entries)-1]))
		return a.Unmap()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		host = p.Addr.String()
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
