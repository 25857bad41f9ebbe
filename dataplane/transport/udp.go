package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// DesiredBufferSize is the UDP socket receive and send buffer size quic-go
// asks for and SocketReport tries to set: 7 MiB (7,340,032 bytes).
const DesiredBufferSize = 7 << 20

// SysctlBufferSize is the value Warning proposes for net.core.rmem_max and
// net.core.wmem_max on Linux: 7,500,000 bytes, a round number above
// DesiredBufferSize, so that a request for 7 MiB is granted in full (Linux
// caps SO_RCVBUF/SO_SNDBUF requests at these limits). It is also the value
// quic-go's documentation recommends.
const SysctlBufferSize = 7_500_000

// bsdMaxSockBuf is the kern.ipc.maxsockbuf value proposed on macOS and the
// BSDs (quic-go's documented value): the limit there covers the buffer and
// its bookkeeping, so it is larger than DesiredBufferSize.
const bsdMaxSockBuf = 8_441_037

// ListenUDP opens the UDP socket for a QUIC listener. For network "udp" and
// an unspecified host ("", "::", e.g. ":4433" or "[::]:4433") it listens
// dual-stack on [::]:port and falls back to 0.0.0.0:port when the host has no
// IPv6 (the address family is not supported or the address cannot be
// assigned), as DESIGN.md §3 asks. Any other address is listened on as given
// (a host name is resolved first). Errors are those of net.ListenUDP, wrapped
// with the address; a failed fallback reports both attempts.
func ListenUDP(network, addr string) (*net.UDPConn, error) {
	return listenUDP(net.ListenUDP, network, addr)
}

// listenFunc has the signature of net.ListenUDP, so that tests can make the
// IPv6 attempt fail.
type listenFunc func(network string, laddr *net.UDPAddr) (*net.UDPConn, error)

func listenUDP(listen listenFunc, network, addr string) (*net.UDPConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s %q: %w", network, addr, err)
	}
	if network != "udp" || (host != "" && host != "::") {
		laddr, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return nil, fmt.Errorf("transport: listen %s %q: %w", network, addr, err)
		}
		conn, err := listen(network, laddr)
		if err != nil {
			return nil, fmt.Errorf("transport: listen %s %q: %w", network, addr, err)
		}
		return conn, nil
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s %q: %w", network, addr, err)
	}
	conn, err6 := listen("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: p})
	if err6 == nil {
		return conn, nil
	}
	if !ipv6Unavailable(err6) {
		return nil, fmt.Errorf("transport: listen udp [::]:%d: %w", p, err6)
	}
	conn, err4 := listen("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: p})
	if err4 != nil {
		return nil, fmt.Errorf("transport: listen udp4 0.0.0.0:%d after [::] failed (%v): %w", p, err6, err4)
	}
	return conn, nil
}

// ipv6Unavailable reports whether err from listening on [::] means the host
// cannot do IPv6 at all, so that IPv4 is worth trying.
func ipv6Unavailable(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) ||
		errors.Is(err, syscall.EPROTONOSUPPORT) ||
		errors.Is(err, syscall.EADDRNOTAVAIL)
}

// Report describes a UDP socket as QUIC will use it; the caller logs it at
// start. The zero value means nothing is known.
type Report struct {
	// ReceiveBuffer and SendBuffer are the socket's buffer sizes in bytes,
	// in the unit the OS limits use (on Linux: half of what getsockopt
	// returns, since the kernel doubles the granted size to allow for its
	// bookkeeping). Zero means unknown.
	ReceiveBuffer, SendBuffer int
	// GSO reports whether the kernel supports UDP generic segmentation
	// offload (Linux UDP_SEGMENT) and QUIC_GO_DISABLE_GSO does not turn it
	// off. The authoritative per-connection answer is
	// quic.ConnectionState().GSO.
	GSO bool
	// Err is what failed while raising or reading the sizes, if anything;
	// the other fields hold what could be read.
	Err error
}

// SocketReport tries to raise conn's receive and send buffers to
// DesiredBufferSize (with SO_RCVBUFFORCE/SO_SNDBUFFORCE on Linux when the
// plain request is capped, which works with CAP_NET_ADMIN), then reads the
// effective sizes and GSO support. quic-go makes the same attempt when it
// takes the socket; doing it here first lets the caller log the outcome. It
// never fails: problems are in Report.Err. Safe to call concurrently with use
// of conn.
func SocketReport(conn *net.UDPConn) Report {
	var errs []error
	if err := conn.SetReadBuffer(DesiredBufferSize); err != nil {
		errs = append(errs, fmt.Errorf("set receive buffer: %w", err))
	}
	if err := conn.SetWriteBuffer(DesiredBufferSize); err != nil {
		errs = append(errs, fmt.Errorf("set send buffer: %w", err))
	}
	var r Report
	rc, err := conn.SyscallConn()
	if err != nil {
		errs = append(errs, fmt.Errorf("raw conn: %w", err))
	} else {
		var gsoSupported bool
		r.ReceiveBuffer, r.SendBuffer, gsoSupported, err = inspectSocket(rc)
		if err != nil {
			errs = append(errs, err)
		}
		r.GSO = gsoSupported && !gsoDisabledByEnv()
	}
	if len(errs) > 0 {
		r.Err = fmt.Errorf("transport: socket report: %w", errors.Join(errs...))
	}
	return r
}

// gsoDisabledByEnv mirrors quic-go's QUIC_GO_DISABLE_GSO switch.
func gsoDisabledByEnv() bool {
	disabled, err := strconv.ParseBool(os.Getenv("QUIC_GO_DISABLE_GSO"))
	return err == nil && disabled
}

// Warning returns, when a known buffer size is below DesiredBufferSize, one
// line saying so with the exact command that raises the OS limit (Linux:
// "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000", listing
// only the limits that are too low); otherwise "". Unknown (zero) sizes never
// warn: Err says why they are unknown.
func (r Report) Warning() string {
	return bufferWarning(r.ReceiveBuffer, r.SendBuffer, runtime.GOOS)
}

// bufferWarning is Report.Warning for a given OS.
func bufferWarning(rcv, snd int, goos string) string {
	low := func(size int) bool { return size > 0 && size < DesiredBufferSize }
	if !low(rcv) && !low(snd) {
		return ""
	}
	var cmd string
	switch goos {
	case "linux", "android":
		var keys []string
		if low(rcv) {
			keys = append(keys, fmt.Sprintf("net.core.rmem_max=%d", SysctlBufferSize))
		}
		if low(snd) {
			keys = append(keys, fmt.Sprintf("net.core.wmem_max=%d", SysctlBufferSize))
		}
		cmd = "sysctl -w " + strings.Join(keys, " ")
	case "darwin", "ios", "freebsd", "netbsd", "openbsd", "dragonfly":
		cmd = fmt.Sprintf("sysctl -w kern.ipc.maxsockbuf=%d", bsdMaxSockBuf)
	}
	msg := fmt.Sprintf("UDP socket buffers are below %d bytes (receive %d, send %d); QUIC throughput will suffer", DesiredBufferSize, rcv, snd)
	if cmd == "" {
		return msg + "; raise the OS limit on socket buffer sizes"
	}
	return msg + "; run: " + cmd
}
