package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane/transport"
)

// dial resolves the endpoint and tries each address in turn, each from a
// new UDP socket, for slot. Once the gateway's certificate is verified the
// handshake claims the replica it names for slot (fleet.claim); a replica
// another slot holds aborts the handshake, so that gateway never registers
// the connection, and the next address is tried. It returns the connection,
// its transport and the replica id ("" if the gateway names none); an
// error wrapping errDuplicateReplica if only held replicas answered.
// Addresses that failed lately are tried last (suspects).
func (a *Agent) dial(ctx context.Context, slot int, set *settings) (*quic.Conn, *quic.Transport, string, error) {
	host, port, _ := net.SplitHostPort(set.endpoint)
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, nil, "", fmt.Errorf("resolve gateway %s: %w", host, err)
		}
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, nil, "", fmt.Errorf("gateway port %q: %w", port, err)
	}
	var (
		errs    []error
		replica string // the replica of the handshake in progress
		refusal error  // why that handshake was aborted, if it was a duplicate
	)
	tlsConf := set.tls.Clone()
	pinned := tlsConf.VerifyConnection
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
		if pinned != nil {
			if err := pinned(cs); err != nil {
				return err
			}
		}
		id, _ := transport.ReplicaIDFromCert(cs.PeerCertificates[0])
		if err := a.fleet.claim(slot, id); err != nil {
			refusal = err
			return err
		}
		replica = id
		return nil
	}
	for _, ip := range a.suspects.order(addrs, time.Now()) {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, nil, "", fmt.Errorf("open UDP socket: %w", err)
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
		replica, refusal = "", nil
		conn, err := tr.Dial(ctx, raddr, transport.ClientTLS(tlsConf), a.quic)
		if err == nil {
			a.suspects.clear(ip)
			return conn, tr, replica, nil
		}
		if refusal == nil && ctx.Err() == nil {
			a.suspects.add(raddr, time.Now())
		}
		tr.Close()
		udp.Close()
		a.fleet.release(slot)
		if refusal != nil {
			// The TLS alert the abort sends does not carry refusal.
			err = refusal
		}
		errs = append(errs, fmt.Errorf("%s: %w", raddr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, "", fmt.Errorf("dial gateway %s: %w", set.endpoint, errors.Join(errs...))
}
