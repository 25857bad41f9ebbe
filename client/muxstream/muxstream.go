// Package muxstream is the wire format of the gateway's standing client
// connection (DESIGN.md §9), as the gateway's entry and "outpost connect"
// speak it: one authenticated connection that carries many sessions.
//
// The connection is TLS to the gateway's API port, where the client sends
//
//	GET /v1/connect HTTP/1.1
//	Connection: Upgrade
//	Upgrade: outpost-mux/1
//	Authorization: Bearer <session token>
//
// and the gateway, once the token is verified, answers 101 Switching
// Protocols with the same Upgrade and the header Outpost-Mux-Max-Streams (the
// sessions the connection may carry at once). From then on the connection
// carries a yamux session (github.com/hashicorp/yamux, Config): the client
// opens one yamux stream per session; the gateway never opens streams.
//
// Each stream carries, in each direction, a sequence of frames
// (frame.go):
//
//	[u8 type][u32 big-endian payload length][payload]
//
//	0x00 DATA   1 to MaxData bytes of the session
//	0x01 END    no payload: this direction ends cleanly (a half-close)
//	0x02 RESET  u8 kind, then a UTF-8 reason of at most MaxReason bytes:
//	            the sender aborted the session (kind ResetAborted or
//	            ResetCanceled), or the gateway could not serve it
//	            (ResetFailed, with the reason the user reads)
//
// A direction is DATA* then END or RESET; a RESET may also follow the
// sender's END. A sender closes its yamux stream (FIN) only when it is done
// with both directions, so a FIN after END without a RESET means the peer
// closed the whole session, and a FIN without END means the peer went away
// (Stream reads it as a plain close, or as a lost connection when the
// connection itself ended). Stream implements this on a yamux stream.
package muxstream

import (
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// UpgradeToken is the HTTP Upgrade protocol of the standing connection.
const UpgradeToken = "outpost-mux/1"

// MaxStreamsHeader is the 101 answer's header that says how many sessions
// the connection may carry at once.
const MaxStreamsHeader = "Outpost-Mux-Max-Streams"

// Limits of a connection. Both ends use them in Config; the gateway may
// carry fewer streams (it says how many in MaxStreamsHeader).
const (
	// DefaultMaxStreams is how many sessions a connection carries at once
	// unless the gateway says otherwise.
	DefaultMaxStreams = 256
	// StreamWindow is the receive window of every stream: how many bytes a
	// peer may send on a stream before the receiver reads them.
	StreamWindow = 1 << 20
	// AcceptBacklog bounds the streams opened but not yet accepted; more
	// are reset by yamux.
	AcceptBacklog = 64
	// DefaultKeepAlive is the ping interval of a connection when Config is
	// given none. A peer that does not answer a ping within
	// WriteTimeout loses the connection.
	DefaultKeepAlive = 30 * time.Second
	// WriteTimeout bounds every frame's wait to be written to the
	// connection, and a ping's wait for its answer.
	WriteTimeout = 10 * time.Second
	// CloseTimeout is how long a stream closed on one side waits for the
	// peer's close before it is reset.
	CloseTimeout = 30 * time.Second
)

// Config returns the yamux configuration of either end: keepAlive is the
// ping interval (zero: DefaultKeepAlive); logf, if not nil, receives
// yamux's own log lines (it logs protocol errors and resets).
func Config(keepAlive time.Duration, logf func(msg string)) *yamux.Config {
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	c := yamux.DefaultConfig()
	c.AcceptBacklog = AcceptBacklog
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAlive
	c.ConnectionWriteTimeout = WriteTimeout
	c.MaxStreamWindowSize = StreamWindow
	c.StreamCloseTimeout = CloseTimeout
	c.StreamOpenTimeout = WriteTimeout
	c.LogOutput = nil
	c.Logger = yamuxLogger{logf}
	return c
}

// yamuxLogger passes yamux's log lines to a function, or drops them.
type yamuxLogger struct{ logf func(string) }

func (l yamuxLogger) Print(v ...any)                 { l.out(fmt.Sprint(v...)) }
func (l yamuxLogger) Println(v ...any)               { l.out(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.out(fmt.Sprintf(format, v...)) }

func (l yamuxLogger) out(s string) {
	if l.logf != nil {
		l.logf(s)
	}
}

// Conn joins what a connection's reads come from (the bytes an HTTP
// reader buffered after the 101 answer, then the connection) with the
// connection itself, for yamux.
type Conn struct {
	io.Reader
	io.WriteCloser
}
