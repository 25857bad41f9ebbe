package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane/transport"
)

// dial resolves the endpoint and tries each address in turn.
func (a *Agent) dial(ctx context.Context, set *settings) (*quic.Conn, *quic.Transport, error) {
	host, port, _ := net.SplitHostPort(set.endpoint)
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, nil, fmt.Errorf("resolve gateway %s: %w", host, err)
		}
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway port %q: %w", port, err)
	}
	var errs []error
	for _, ip := range addrs {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, nil, fmt.Errorf("open UDP socket: %w", err)
		}
		a.reportOnce.Do(func() {
			rep := transport.SocketReport(udp)
			a.log.Info("UDP socket", "recv_buffer", rep.ReceiveBuffer, "send_buffer", rep.SendBuffer, "gso", rep.GSO)
			if w := rep.Warning(); w != "" {
				a.log.Warn(w)
			}
		})
		tr := &quic.Transport{Conn: udp, StatelessResetKey: set.resetKey}
		raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(p)))
		conn, err := tr.Dial(ctx, raddr, transport.ClientTLS(set.tls), a.quic)
		if err == nil {
			return conn, tr, nil
		}
		tr.Close()
		udp.Close()
		errs = append(errs, fmt.Errorf("%s: %w", raddr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, fmt.Errorf("dial gateway %s: %w", set.endpoint, errors.Join(errs...))
}
