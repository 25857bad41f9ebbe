// Package transport holds what the gateway and the agent share about the QUIC
// connection that carries the tunnel: the ALPN, the TLS 1.3 settings, the
// quic-go configuration with its defaults (DESIGN.md §3), a process-wide
// memory budget for connection flow-control windows, the UDP socket set-up
// and report logged at start (buffer sizes, GSO, the sysctl to run), and the
// one implementation of SPKI pins (pin.go) that every TLS client and the
// gateway's PKI use to compute and check key and CA pins.
//
// The package decides nothing about policy (who may connect, what a stream
// carries) and logs nothing: functions return values the caller logs.
package transport

import (
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
)

// Defaults of Config (DESIGN.md §3 and §12).
const (
	// DefaultIdleTimeout closes a connection after this long without any
	// packet from the peer.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultKeepAlivePeriod is how often a keep-alive packet is sent on an
	// otherwise idle connection.
	DefaultKeepAlivePeriod = 15 * time.Second
	// DefaultHandshakeTimeout bounds the whole QUIC+TLS handshake.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxIncomingStreams is the number of concurrent bidirectional
	// streams the peer may open (the agent's session limit).
	DefaultMaxIncomingStreams = 4096
	// DefaultMaxStreamReceiveWindow is the largest a stream's receive window
	// grows to (4 MiB).
	DefaultMaxStreamReceiveWindow = 4 << 20
	// DefaultMaxConnectionReceiveWindow is the largest a connection's receive
	// window grows to (32 MiB).
	DefaultMaxConnectionReceiveWindow = 32 << 20
	// DefaultMemoryBudget is the byte limit of the memory budget QUIC creates
	// when Config.Budget is nil (1 GiB).
	DefaultMemoryBudget = 1 << 30

	// initialReceiveWindow is where stream and connection receive windows
	// start (512 KiB); quic-go's auto-tuning grows a window towards its maximum
	// only while the application reads fast enough, so an idle session costs
	// no more than this in promised buffer.
	initialReceiveWindow = 512 << 10
)

// Config is the QUIC configuration shared by the gateway's listener and the
// agent's dialer. The zero value of every field means its default, so
// Config{} is the DESIGN.md configuration. A Config is a plain value: copy it
// freely; it is safe for concurrent use as long as nobody writes to it.
type Config struct {
	// IdleTimeout closes the connection when no packet arrived for this long
	// (the smaller of both peers' values applies). If zero, 120 s.
	IdleTimeout time.Duration
	// KeepAlivePeriod is how often a PING is sent on an idle connection
	// (quic-go caps it at half the idle timeout). If zero, 15 s.
	KeepAlivePeriod time.Duration
	// HandshakeTimeout bounds the whole handshake. quic-go aborts a handshake
	// that receives nothing for HandshakeIdleTimeout or has not completed
	// after twice that, so QUIC sets HandshakeIdleTimeout to half of this
	// value. If zero, 10 s.
	HandshakeTimeout time.Duration
	// MaxIncomingStreams is the number of concurrent bidirectional streams
	// the peer may open. If zero, 4,096.
	MaxIncomingStreams int64
	// MaxStreamReceiveWindow is the largest a stream's receive window grows
	// to, in bytes; windows start at 512 KiB (or this value if smaller). If
	// zero, 4 MiB.
	MaxStreamReceiveWindow uint64
	// MaxConnectionReceiveWindow is the largest a connection's receive window
	// grows to, in bytes; windows start at 512 KiB (or this value if smaller),
	// and each increase must be allowed by the memory budget. If zero, 32 MiB.
	MaxConnectionReceiveWindow uint64
	// MemoryBudget is the byte limit of the budget QUIC creates when Budget
	// is nil. Ignored when Budget is set. If zero, 1 GiB.
	MemoryBudget int64
	// Budget, if set, is the memory budget every connection built from the
	// returned quic.Config draws on; share one Budget between configs to
	// share the limit, and keep a reference to read Used or call Release. If
	// nil, each call to QUIC creates a new budget of MemoryBudget bytes.
	Budget *MemoryBudget
}

// withDefaults returns a copy of c with every zero (or invalid negative)
// field replaced by its default.
func (c Config) withDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.KeepAlivePeriod <= 0 {
		c.KeepAlivePeriod = DefaultKeepAlivePeriod
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxIncomingStreams <= 0 {
		c.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	if c.MaxStreamReceiveWindow == 0 {
		c.MaxStreamReceiveWindow = DefaultMaxStreamReceiveWindow
	}
	if c.MaxConnectionReceiveWindow == 0 {
		c.MaxConnectionReceiveWindow = DefaultMaxConnectionReceiveWindow
	}
	if c.MemoryBudget <= 0 {
		c.MemoryBudget = DefaultMemoryBudget
	}
	return c
}

// Validate reports the first field with a value that has no meaning (a
// negative duration, stream count or budget) or a keep-alive period not
// shorter than the idle timeout, after defaults are applied. Zero values are
// valid: they mean the default. The error names the field.
func (c Config) Validate() error {
	negative := []struct {
		field string
		bad   bool
		value any
	}{
		{"IdleTimeout", c.IdleTimeout < 0, c.IdleTimeout},
		{"KeepAlivePeriod", c.KeepAlivePeriod < 0, c.KeepAlivePeriod},
		{"HandshakeTimeout", c.HandshakeTimeout < 0, c.HandshakeTimeout},
		{"MaxIncomingStreams", c.MaxIncomingStreams < 0, c.MaxIncomingStreams},
		{"MemoryBudget", c.MemoryBudget < 0, c.MemoryBudget},
	}
	for _, n := range negative {
		if n.bad {
			return fmt.Errorf("transport: %s must not be negative, got %v", n.field, n.value)
		}
	}
	d := c.withDefaults()
	if d.KeepAlivePeriod >= d.IdleTimeout {
		return fmt.Errorf("transport: KeepAlivePeriod (%v) must be shorter than IdleTimeout (%v)", d.KeepAlivePeriod, d.IdleTimeout)
	}
	return nil
}

// QUIC builds the quic-go configuration: the timeouts, 4,096 incoming
// bidirectional streams, no unidirectional streams, no datagrams, no 0-RTT,
// receive windows from 512 KiB up to the configured maxima, and
// AllowConnectionWindowIncrease bound to the memory budget (c.Budget, or a
// new one of c.MemoryBudget bytes shared by every connection that uses the
// returned config — so build it once per process and reuse it).
//
// QUIC does not validate: call Validate first; a negative field is treated
// as zero. The returned config is new on every call; callers may modify it.
func (c Config) QUIC() *quic.Config {
	d := c.withDefaults()
	budget := d.Budget
	if budget == nil {
		budget = NewMemoryBudget(d.MemoryBudget)
	}
	handshakeIdle := d.HandshakeTimeout / 2
	if handshakeIdle <= 0 {
		handshakeIdle = d.HandshakeTimeout
	}
	return &quic.Config{
		HandshakeIdleTimeout:           handshakeIdle,
		MaxIdleTimeout:                 d.IdleTimeout,
		KeepAlivePeriod:                d.KeepAlivePeriod,
		InitialStreamReceiveWindow:     min(initialReceiveWindow, d.MaxStreamReceiveWindow),
		MaxStreamReceiveWindow:         d.MaxStreamReceiveWindow,
		InitialConnectionReceiveWindow: min(initialReceiveWindow, d.MaxConnectionReceiveWindow),
		MaxConnectionReceiveWindow:     d.MaxConnectionReceiveWindow,
		AllowConnectionWindowIncrease:  budget.Allow,
		MaxIncomingStreams:             d.MaxIncomingStreams,
		MaxIncomingUniStreams:          -1,
	}
}
