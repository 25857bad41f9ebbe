package transport

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestListenUDP(t *testing.T) {
	tests := []struct {
		name, network, addr string
		wantIP              net.IP
	}{
		{"ipv4 loopback", "udp", "127.0.0.1:0", net.IPv4(127, 0, 0, 1)},
		{"ipv6 loopback", "udp", "[::1]:0", net.IPv6loopback},
		{"udp4 any", "udp4", "0.0.0.0:0", net.IPv4zero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := ListenUDP(tt.network, tt.addr)
			if err != nil {
				if tt.wantIP.To4() == nil && ipv6Unavailable(err) {
					t.Skipf("no IPv6 here: %v", err)
				}
				t.Fatal(err)
			}
			defer conn.Close()
			la := conn.LocalAddr().(*net.UDPAddr)
			if !la.IP.Equal(tt.wantIP) || la.Port == 0 {
				t.Fatalf("listening on %v, want %v with a port", la, tt.wantIP)
			}
		})
	}
}

// An unspecified address listens dual-stack: an IPv4 client reaches it.
func TestListenUDPDualStack(t *testing.T) {
	conn, err := ListenUDP("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	la := conn.LocalAddr().(*net.UDPAddr)
	t.Logf("listening on %v", la)
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: la.Port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q from %v: %v", buf[:n], from, err)
	}
}

func TestListenUDPFallback(t *testing.T) {
	type call struct {
		network string
		addr    string
	}
	tests := []struct {
		name      string
		addr      string
		err6      error // what listening on [::] fails with
		wantCalls []call
		wantErr   bool
	}{
		{"ipv6 works", "[::]:4433", nil, []call{{"udp", "[::]:4433"}}, false},
		{"no ipv6 family", ":4433", syscall.EAFNOSUPPORT, []call{{"udp", "[::]:4433"}, {"udp4", "0.0.0.0:4433"}}, false},
		{"no ipv6 address", "[::]:4433", syscall.EADDRNOTAVAIL, []call{{"udp", "[::]:4433"}, {"udp4", "0.0.0.0:4433"}}, false},
		{"port in use is final", ":4433", syscall.EADDRINUSE, []call{{"udp", "[::]:4433"}}, true},
		{"named port", ":domain", nil, []call{{"udp", "[::]:53"}}, false},
		{"specific host", "127.0.0.1:4433", nil, []call{{"udp", "127.0.0.1:4433"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []call
			listen := func(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
				calls = append(calls, call{network, laddr.String()})
				if network == "udp" && laddr.IP.Equal(net.IPv6unspecified) && tt.err6 != nil {
					return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("socket", tt.err6)}
				}
				// Stand in for the real socket with a loopback one.
				return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			}
			conn, err := listenUDP(listen, "udp", tt.addr)
			if conn != nil {
				conn.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if len(calls) != len(tt.wantCalls) {
				t.Fatalf("calls %v, want %v", calls, tt.wantCalls)
			}
			for i := range calls {
				if calls[i] != tt.wantCalls[i] {
					t.Fatalf("calls %v, want %v", calls, tt.wantCalls)
				}
			}
		})
	}
	if _, err := ListenUDP("udp", "no-port"); err == nil {
		t.Error("address without port accepted")
	}
}

func TestSocketReport(t *testing.T) {
	conn, err := ListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := SocketReport(conn)
	t.Logf("report: %+v", r)
	t.Logf("warning: %q", r.Warning())
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if r.ReceiveBuffer <= 0 || r.SendBuffer <= 0 {
		t.Fatalf("sizes not read: %+v", r)
	}
	low := r.ReceiveBuffer < DesiredBufferSize || r.SendBuffer < DesiredBufferSize
	if low != (r.Warning() != "") {
		t.Fatalf("sizes %d/%d but warning %q", r.ReceiveBuffer, r.SendBuffer, r.Warning())
	}
}

func TestBufferWarning(t *testing.T) {
	const ok, low = DesiredBufferSize, DesiredBufferSize - 1
	tests := []struct {
		name     string
		rcv, snd int
		goos     string
		want     string // substring; "" means no warning at all
		wantNot  string
	}{
		{"both fine", ok, ok, "linux", "", ""},
		{"both large", 16 << 20, 16 << 20, "linux", "", ""},
		{"unknown sizes", 0, 0, "linux", "", ""},
		{"both low", 212992, 212992, "linux", "run: sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000", ""},
		{"receive low", low, ok, "linux", "run: sysctl -w net.core.rmem_max=7500000", "wmem_max"},
		{"send low", ok, low, "linux", "run: sysctl -w net.core.wmem_max=7500000", "rmem_max"},
		{"one unknown one low", 0, low, "linux", "sysctl -w net.core.wmem_max=7500000", "rmem_max"},
		{"darwin", low, low, "darwin", "run: sysctl -w kern.ipc.maxsockbuf=8441037", "net.core"},
		{"windows", low, ok, "windows", "raise the OS limit", "sysctl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bufferWarning(tt.rcv, tt.snd, tt.goos)
			if tt.want == "" {
				if got != "" {
					t.Fatalf("warning %q, want none", got)
				}
				return
			}
			if !strings.Contains(got, tt.want) {
				t.Fatalf("warning %q lacks %q", got, tt.want)
			}
			if tt.wantNot != "" && strings.Contains(got, tt.wantNot) {
				t.Fatalf("warning %q contains %q", got, tt.wantNot)
			}
		})
	}
}

func TestIPv6Unavailable(t *testing.T) {
	for err, want := range map[error]bool{
		syscall.EAFNOSUPPORT:                     true,
		syscall.EPROTONOSUPPORT:                  true,
		&net.OpError{Err: syscall.EADDRNOTAVAIL}: true,
		syscall.EADDRINUSE:                       false,
		errors.New("other"):                      false,
	} {
		if got := ipv6Unavailable(err); got != want {
			t.Errorf("ipv6Unavailable(%v) = %v", err, got)
		}
	}
}
