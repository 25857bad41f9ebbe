//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package transport

import (
	"errors"
	"fmt"
	"syscall"
)

// inspectSocket reads the buffer sizes as the kernel reports them (these
// kernels do not double them); GSO is a Linux feature.
func inspectSocket(rc syscall.RawConn) (rcv, snd int, gso bool, err error) {
	var errs []error
	cerr := rc.Control(func(fd uintptr) {
		var e error
		if rcv, e = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); e != nil {
			errs = append(errs, fmt.Errorf("getsockopt SO_RCVBUF: %w", e))
		}
		if snd, e = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF); e != nil {
			errs = append(errs, fmt.Errorf("getsockopt SO_SNDBUF: %w", e))
		}
	})
	if cerr != nil {
		errs = append(errs, fmt.Errorf("control: %w", cerr))
	}
	return rcv, snd, false, errors.Join(errs...)
}
