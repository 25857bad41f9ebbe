//go:build linux

package transport

import (
	"errors"
	"fmt"
	"syscall"
)

// udpSegment is UDP_SEGMENT from linux/udp.h (Linux 4.18+); the syscall
// package does not define it.
const udpSegment = 103

// inspectSocket reads the buffer sizes, forcing them up to
// DesiredBufferSize with SO_*BUFFORCE when the plain request was capped
// (needs CAP_NET_ADMIN; failure is not an error), and probes UDP_SEGMENT.
// Sizes are returned halved: Linux reports twice the granted size.
func inspectSocket(rc syscall.RawConn) (rcv, snd int, gso bool, err error) {
	var errs []error
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		rcv = readBuffer(s, syscall.SO_RCVBUF, syscall.SO_RCVBUFFORCE, "SO_RCVBUF", &errs)
		snd = readBuffer(s, syscall.SO_SNDBUF, syscall.SO_SNDBUFFORCE, "SO_SNDBUF", &errs)
		_, gerr := syscall.GetsockoptInt(s, syscall.IPPROTO_UDP, udpSegment)
		gso = gerr == nil
	})
	if cerr != nil {
		errs = append(errs, fmt.Errorf("control: %w", cerr))
	}
	return rcv, snd, gso, errors.Join(errs...)
}

// readBuffer returns the granted size of the buffer opt on socket s, after
// trying force when it is below DesiredBufferSize; zero if unreadable.
func readBuffer(s, opt, force int, name string, errs *[]error) int {
	size, err := syscall.GetsockoptInt(s, syscall.SOL_SOCKET, opt)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("getsockopt %s: %w", name, err))
		return 0
	}
	if size/2 < DesiredBufferSize {
		// Ignore the error: without CAP_NET_ADMIN this is EPERM, and the
		// size read next tells what happened.
		_ = syscall.SetsockoptInt(s, syscall.SOL_SOCKET, force, DesiredBufferSize)
		if size, err = syscall.GetsockoptInt(s, syscall.SOL_SOCKET, opt); err != nil {
			*errs = append(*errs, fmt.Errorf("getsockopt %s: %w", name, err))
			return 0
		}
	}
	return size / 2
}
