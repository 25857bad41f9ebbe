package tunnel

import (
	"fmt"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/fakeclock"
)

// Exactly the limit passes within a minute, one more is refused (reported
// once), and the next minute starts afresh; agents are counted apart.
func TestChangeLimiter(t *testing.T) {
	clk := fakeclock.New(time.Unix(1_900_000_000, 0))
	l := newChangeLimiter(3, clk.Now)
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("change %d of 3 refused", i+1)
		}
		clk.Advance(10 * time.Second)
	}
	if ok, first := l.allow("a"); ok || !first {
		t.Fatalf("change 4 of 3: ok %v, first %v", ok, first)
	}
	if ok, first := l.allow("a"); ok || first {
		t.Fatalf("change 5 of 3: ok %v, first refusal again %v", ok, first)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another agent is limited too")
	}
	clk.Advance(30*time.Second - time.Nanosecond) // 59.999… s after the window began
	if ok, _ := l.allow("a"); ok {
		t.Fatal("allowed before the minute passed")
	}
	clk.Advance(time.Nanosecond)
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("refused after the minute passed")
	}
}

// Expired windows are pruned as the map grows; live ones are kept.
func TestChangeLimiterPrunes(t *testing.T) {
	clk := fakeclock.New(time.Unix(1_900_000_000, 0))
	l := newChangeLimiter(1, clk.Now)
	l.allow("keep")
	l.allow("keep")
	for i := range minPrune {
		l.allow(fmt.Sprint(i))
	}
	clk.Advance(time.Minute)
	for i := range minPrune {
		l.allow(fmt.Sprint("new", i))
	}
	if n := len(l.windows); n > minPrune+1 {
		t.Fatalf("%d windows held, expired ones not pruned", n)
	}
	if ok, _ := l.allow("new0"); ok {
		// new0's window is live: its single change was counted.
		t.Fatal("a live window was pruned")
	}
}
