//go:build !linux

package proc

import (
	"errors"
	"syscall"
)

// Attr has nothing to add outside Linux, where the benchmark cannot
// read /proc anyway and stops with an error before starting any load.
func Attr() *syscall.SysProcAttr { return nil }

// setNonblock is not attempted outside Linux.
func setNonblock(int) error { return errors.ErrUnsupported }

// udpOffload is Linux-only.
func udpOffload() (gso, gro bool, err error) { return false, false, errors.ErrUnsupported }

// RaiseFileLimit is Linux-only: it returns errors.ErrUnsupported.
func RaiseFileLimit(uint64) (uint64, error) { return 0, errors.ErrUnsupported }

// ErrBelowWant is the Linux version's; RaiseFileLimit never returns it here.
var ErrBelowWant = errors.New("the hard limit may not be raised")
