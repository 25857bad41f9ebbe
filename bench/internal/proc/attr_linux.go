package proc

import (
	"errors"
	"net"
	"syscall"
)

// Attr makes the kernel kill a child if the benchmark dies without
// stopping it (Linux PR_SET_PDEATHSIG), so no process outlives a crash.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// setNonblock puts fd in non-blocking mode.
func setNonblock(fd int) error { return syscall.SetNonblock(fd, true) }

// Socket options of UDP segmentation offload (<linux/udp.h>), which quic-go
// uses when the kernel has them.
const (
	udpSegment = 103 // UDP_SEGMENT: GSO on send
	udpGRO     = 104 // UDP_GRO: GRO on receive
)

// udpOffload reports whether a loopback UDP socket accepts the GSO and GRO
// socket options, the test quic-go makes before using them.
func udpOffload() (gso, gro bool, err error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false, false, err
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false, err
	}
	cerr := rc.Control(func(fd uintptr) {
		_, gerr := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_UDP, udpSegment)
		gso = gerr == nil
		_, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_UDP, udpGRO)
		gro = gerr == nil
	})
	return gso, gro, cerr
}

// RaiseFileLimit raises RLIMIT_NOFILE to want (soft and hard) if allowed,
// else the soft limit to the hard one (then it returns the limit and
// ErrBelowWant), and returns the soft limit now in force. Children started
// afterwards inherit it: the Go runtime restores the limit it found at
// start-up for its children only while the program has not set one itself.
// Other errors are getrlimit's and setrlimit's.
func RaiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return want, nil
		}
	}
	l.Cur = min(max(l.Cur, want), l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < want {
		return l.Cur, ErrBelowWant
	}
	return l.Cur, nil
}

// ErrBelowWant is RaiseFileLimit's answer when the hard open-file limit is
// below what was asked for and may not be raised (no CAP_SYS_RESOURCE): the
// soft limit is then at the hard one.
var ErrBelowWant = errors.New("the hard limit may not be raised")
