package muxstream

import (
	"encoding/binary"
	"errors"
	"io"
	"time"
)

// The yamux frame header, as the guard reads it (yamux's spec.md): version,
// type, flags, stream id, length.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxTypePing   = 2
	yamuxFlagSYN    = 1
)

// Ping limits of a Guard: a peer may send PingBurst pings at once, then one
// per PingInterval. A yamux peer pings once per keepalive interval (30 s by
// default), so only a hostile one comes near.
const (
	PingBurst    = 16
	PingInterval = time.Second
)

// ErrPingFlood is the error a Guard stops the connection with.
var ErrPingFlood = errors.New("muxstream: the peer sends pings faster than allowed")

// Guard reads a peer's yamux frames on their way to the yamux session and
// fails the connection when the peer floods it with pings: yamux answers
// each ping from a goroutine of its own, so a peer that pings without
// reading would pile up goroutines. Everything else yamux bounds itself
// (receive windows, accept backlog, frame types). Guard passes the bytes on
// unchanged; it is not safe for concurrent use (yamux reads from one
// goroutine).
type Guard struct {
	src io.Reader
	now func() time.Time

	hdr  [yamuxHeaderSize]byte
	nhdr int    // header bytes seen
	skip uint32 // DATA payload bytes still to pass

	tokens float64   // pings allowed now
	last   time.Time // when tokens was computed
	err    error
}

// NewGuard returns a Guard reading from src; now is the clock (nil:
// time.Now).
func NewGuard(src io.Reader, now func() time.Time) *Guard {
	if now == nil {
		now = time.Now
	}
	return &Guard{src: src, now: now, tokens: PingBurst, last: now()}
}

// Read reads from the source and checks the frames the bytes complete. It
// returns ErrPingFlood, instead of the bytes, once the peer pinged too
// much, and from then on.
func (g *Guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.src.Read(p)
	if ferr := g.scan(p[:n]); ferr != nil {
		g.err = ferr
		return 0, ferr
	}
	return n, err
}

// scan advances the frame state over b.
func (g *Guard) scan(b []byte) error {
	for len(b) > 0 {
		if g.skip > 0 {
			k := min(g.skip, uint32(len(b)))
			g.skip -= k
			b = b[k:]
			continue
		}
		c := copy(g.hdr[g.nhdr:], b)
		g.nhdr += c
		b = b[c:]
		if g.nhdr < yamuxHeaderSize {
			return nil
		}
		g.nhdr = 0
		typ := g.hdr[1]
		flags := binary.BigEndian.Uint16(g.hdr[2:4])
		length := binary.BigEndian.Uint32(g.hdr[8:12])
		switch {
		case typ == yamuxTypeData:
			g.skip = length
		case typ == yamuxTypePing && flags&yamuxFlagSYN != 0:
			if !g.allowPing() {
				return ErrPingFlood
			}
		}
	}
	return nil
}

// allowPing takes one ping from the bucket, refilled at one per
// PingInterval up to PingBurst.
func (g *Guard) allowPing() bool {
	now := g.now()
	if d := now.Sub(g.last); d > 0 {
		g.tokens = min(PingBurst, g.tokens+float64(d)/float64(PingInterval))
		g.last = now
	}
	if g.tokens < 1 {
		return false
	}
	g.tokens--
	return true
}
