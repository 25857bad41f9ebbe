package tunnel

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// writeRaw writes the frames given in hex (spaces ignored) on the control
// stream as they are.
func (c *gwConn) writeRaw(t *testing.T, frames ...string) {
	t.Helper()
	for _, f := range frames {
		b, err := hex.DecodeString(strings.ReplaceAll(f, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ctrl.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

// The agent skips the control frames it cannot use (DESIGN.md §2) and keeps
// the connection; a frame over the limit puts the stream out of step and
// ends the connection with "shutdown".
func TestControlSkipsBadFrames(t *testing.T) {
	e := newEnv(t)
	start(t, e.config())
	c := e.gw.nextConn(t)
	c.writeRaw(t,
		"00 00 00 03 09 00 01",                            // unknown tag 0x09
		"00 00 00 04 03 00 01 00",                         // HeartbeatAck cut short
		"00 00 00 0C 03 00 01 00 00 00 00 00 00 00 05 FF", // HeartbeatAck with a trailing byte
		"00 00 00 0B 03 00 02 00 00 00 00 00 00 00 05",    // HeartbeatAck version 2
	)
	waitFor(t, "the version-2 message ignored", func() bool { return e.logs.Contains("ignoring control message") })
	if n := strings.Count(e.logs.String(), "skipping control message"); n != 3 {
		t.Fatalf("%d frames skipped, want 3", n)
	}
	e.gw.noConn(t, 50*time.Millisecond)
	if err := c.q.Context().Err(); err != nil {
		t.Fatalf("the connection ended: %v", err)
	}

	c.writeRaw(t, "00 10 00 01") // declares MaxControlPayload + 1
	if r := c.closeReason(t); r != "shutdown" {
		t.Fatalf("close reason %q", r)
	}
	if !e.logs.Contains("control stream failed; closing the tunnel") {
		t.Fatal("no log line about the failed control stream")
	}
}

// A Heartbeat is due once the packet counter has not moved for the limit,
// counted from the check that last saw it move, and again a limit later
// while it stays still.
func TestQuietWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	q := &quietWatch{limit: 2 * time.Second, step: 500 * time.Millisecond, packets: 7, heardAt: t0}
	for i, tc := range []struct {
		at      time.Duration // after t0
		packets uint64
		due     bool
	}{
		{500 * time.Millisecond, 7, false},
		{1500 * time.Millisecond, 8, false}, // a PING: heard at 1.5 s
		{3 * time.Second, 8, false},         // 1.5 s of silence
		{3500 * time.Millisecond, 8, true},  // 2 s
		{4 * time.Second, 8, false},         // the next is a limit later
		{5500 * time.Millisecond, 8, true},
		{6 * time.Second, 9, false}, // the answer
		{7500 * time.Millisecond, 9, false},
	} {
		if got := q.due(tc.packets, t0.Add(tc.at)); got != tc.due {
			t.Errorf("check %d at %v (packets %d): due %v, want %v", i, tc.at, tc.packets, got, tc.due)
		}
	}
}
