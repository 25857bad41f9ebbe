package muxstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/outposthq/outpost/internal/fakeclock"
)

// yamuxFrame is a yamux frame: header and payload (data frames only).
func yamuxFrame(typ uint8, flags uint16, stream uint32, length uint32, payload []byte) []byte {
	b := []byte{0, typ}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

func ping(id uint32) []byte { return yamuxFrame(yamuxTypePing, yamuxFlagSYN, 0, id, nil) }

// The guard lets the pings of a keepalive through, and a burst, and stops a
// flood; a DATA payload that looks like pings is not counted.
func TestGuardPings(t *testing.T) {
	clk := fakeclock.New(time.Unix(1e9, 0))
	var in []byte
	// A DATA frame whose payload is a hundred pings' bytes.
	var fake []byte
	for i := range 100 {
		fake = append(fake, ping(uint32(i))...)
	}
	in = append(in, yamuxFrame(yamuxTypeData, 0, 1, uint32(len(fake)), fake)...)
	// Ping answers (ACK) are never limited.
	for i := range 100 {
		in = append(in, yamuxFrame(yamuxTypePing, 2, 0, uint32(i), nil)...)
	}
	for i := range PingBurst {
		in = append(in, ping(uint32(i))...)
	}
	g := NewGuard(iotest.OneByteReader(bytes.NewReader(in)), clk.Now)
	got, err := io.ReadAll(g)
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("within the burst: %d of %d bytes, %v", len(got), len(in), err)
	}

	// The burst is spent: one more ping is a flood, until time refills it.
	g.src = bytes.NewReader(ping(1))
	if _, err := io.ReadAll(g); !errors.Is(err, ErrPingFlood) {
		t.Fatalf("a ping past the burst: %v", err)
	}
	if _, err := g.Read(make([]byte, 1)); !errors.Is(err, ErrPingFlood) {
		t.Fatal("the flood error is not sticky")
	}

	g = NewGuard(nil, clk.Now)
	for i := range PingBurst {
		if !g.allowPing() {
			t.Fatalf("ping %d of the burst refused", i)
		}
	}
	if g.allowPing() {
		t.Fatal("ping past the burst allowed")
	}
	clk.Advance(PingInterval)
	if !g.allowPing() || g.allowPing() {
		t.Fatal("one interval does not refill exactly one ping")
	}
	clk.Advance(time.Hour)
	for range PingBurst {
		if !g.allowPing() {
			t.Fatal("a long pause does not refill the burst")
		}
	}
	if g.allowPing() {
		t.Fatal("the bucket holds more than the burst")
	}
}
