//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// childAttr has nothing to add outside Linux, where the benchmark cannot
// read /proc anyway and stops with an error before starting any load.
func childAttr() *syscall.SysProcAttr { return nil }

// setNonblock is not attempted outside Linux.
func setNonblock(int) error { return errors.ErrUnsupported }

// udpOffload is Linux-only.
func udpOffload() (gso, gro bool, err error) { return false, false, errors.ErrUnsupported }

// raiseFileLimit is Linux-only.
func raiseFileLimit(uint64) (uint64, error) { return 0, errors.ErrUnsupported }

// errBelowWant is the Linux version's; raiseFileLimit never returns it here.
var errBelowWant = errors.New("the hard limit may not be raised")
