package tunnel

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The silence threshold is the configured timeout on a short path and grows
// with the round trip on a long one, where QUIC itself stretches the
// keep-alive to 1.5 probe timeouts.
func TestSilenceThreshold(t *testing.T) {
	l := newLiveness(nil, 3*time.Second, 1500*time.Millisecond, nil)
	for _, tc := range []struct {
		srtt, dev, want time.Duration
	}{
		{0, 0, 3 * time.Second}, // loopback
		{50 * time.Millisecond, 10 * time.Millisecond, 3 * time.Second}, // a continent away
		// 1 s ± 250 ms: PTO = 1 s + 1 s + 25 ms; keep-alive 1.5 PTO.
		{time.Second, 250 * time.Millisecond, 2025*time.Millisecond*3/2 + 3*2025*time.Millisecond},
	} {
		if got := l.threshold(quic.ConnectionStats{SmoothedRTT: tc.srtt, MeanDeviation: tc.dev}); got != tc.want {
			t.Errorf("rtt %v ± %v: threshold %v, want %v", tc.srtt, tc.dev, got, tc.want)
		}
	}
	if l.interval != 250*time.Millisecond {
		t.Errorf("sweep interval %v", l.interval)
	}
}
