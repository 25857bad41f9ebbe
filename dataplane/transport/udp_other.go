//go:build !linux && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package transport

import (
	"errors"
	"syscall"
)

// inspectSocket cannot read socket options here: sizes are unknown (zero).
func inspectSocket(syscall.RawConn) (rcv, snd int, gso bool, err error) {
	return 0, 0, false, errors.ErrUnsupported
}
