//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package relay

import "errors"

// tcpWaits tells whether TCPEndpoint.WaitRead works on this platform.
const tcpWaits = false

// WaitRead is not available on this platform: it returns
// errors.ErrUnsupported, and Relay waits for data with a small buffer.
func (e *TCPEndpoint) WaitRead() error { return errors.ErrUnsupported }
