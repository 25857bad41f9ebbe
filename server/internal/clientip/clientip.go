// Package clientip finds the network address of the client behind a request:
// a gRPC call (straight over the TLS port, or through the in-process REST
// gateway, which records the HTTP peer in x-forwarded-for) or an HTTP request
// such as the client entry's. X-Forwarded-For written by anyone else is
// believed only from trusted proxies (Resolver.Trusted; none by default).
package clientip

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// inProcessNetwork is the Network() of bufconn addresses: calls from the REST gateway.
const inProcessNetwork = "bufconn"

// Resolver finds client addresses. The zero value trusts no proxy: the
// client is the TCP peer. It is safe for concurrent use.
type Resolver struct {
	// Trusted are the networks of reverse proxies (load balancers) whose
	// X-Forwarded-For is believed: while the nearest hop is in one of
	// them, the client is taken from the entry it appended.
	Trusted []netip.Prefix
}

// ParseTrusted parses trusted proxy networks ("10.0.0.0/8", "2001:db8::/32",
// or a single address).
func ParseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want an address or a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func (r Resolver) trusted(a netip.Addr) bool {
	for _, p := range r.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// walk returns the client behind peer: while peer is a trusted proxy, the
// last remaining X-Forwarded-For entry (values as received, comma-separated
// lists allowed) becomes the peer. An unparsable entry stops the walk at the
// proxy.
func (r Resolver) walk(peer netip.Addr, xff []string) netip.Addr {
	var hops []string
	for _, v := range xff {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				hops = append(hops, e)
			}
		}
	}
	for len(hops) > 0 && peer.IsValid() && r.trusted(peer) {
		a, err := netip.ParseAddr(hops[len(hops)-1])
		if err != nil {
			break
		}
		peer, hops = a.Unmap(), hops[:len(hops)-1]
	}
	return peer
}

// FromContext returns the client's IP address of a gRPC call, or the zero
// Addr when unknown. On in-process calls from the REST gateway the last
// x-forwarded-for entry is the HTTP peer (the gateway appended it).
func (r Resolver) FromContext(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	xff := md.Get("x-forwarded-for")
	if p.Addr.Network() == inProcessNetwork {
		if len(xff) == 0 {
			return netip.Addr{}
		}
		var hops []string
		for _, v := range xff {
			hops = append(hops, strings.Split(v, ",")...)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(hops[len(hops)-1]))
		if err != nil {
			return netip.Addr{}
		}
		return r.walk(last.Unmap(), []string{strings.Join(hops[:len(hops)-1], ",")})
	}
	return r.walk(addrOf(p.Addr.String()), xff)
}

// FromRequest returns the client's IP address of an HTTP request.
func (r Resolver) FromRequest(req *http.Request) netip.Addr {
	return r.walk(addrOf(req.RemoteAddr), req.Header.Values("X-Forwarded-For"))
}

// addrOf parses "host:port" or a bare host.
func addrOf(s string) netip.Addr {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// FromContext is Resolver{}.FromContext: no proxy is trusted.
func FromContext(ctx context.Context) netip.Addr { return Resolver{}.FromContext(ctx) }

// proxyHeaderTimeout bounds reading a PROXY protocol header.
const proxyHeaderTimeout = 10 * time.Second

// ProxyProtocolListener wraps ln so that a PROXY protocol (v1 or v2) header
// from a trusted proxy sets the connection's remote address to the client's;
// from any other peer a header is refused (the connection fails) and a
// connection without one is served unchanged.
func (r Resolver) ProxyProtocolListener(ln net.Listener) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: proxyHeaderTimeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if r.trusted(addrOf(o.Upstream.String())) {
				return proxyproto.USE, nil
			}
			return proxyproto.REJECT, nil
		},
	}
}
