package relay

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// 1,000 idle relays must not pin 2 × 32 KiB each: after a burst through every
// session, the pooled buffers go back and the heap holds only the small
// per-direction buffers and bookkeeping.
func TestIdleSessionsMemory(t *testing.T) {
	const (
		sessions = 1000
		burst    = 8 << 10 // more than the small buffer: makes each direction borrow
		limit    = 16 << 10
		// waitingLimit holds where a direction waits without a buffer
		// (ReadWaiter): bookkeeping only.
		waitingLimit = 4 << 10
	)
	checkGoroutines(t)

	gwLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer gwLn.Close()
	targetLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer targetLn.Close()

	type pair struct{ client, gw, upstream, target *net.TCPConn }
	pairs := make([]pair, sessions)
	for i := range pairs {
		p := &pairs[i]
		p.client, p.gw = dialTCP(t, gwLn)
		p.upstream, p.target = dialTCP(t, targetLn)
	}
	defer func() {
		for _, p := range pairs {
			p.client.Close()
			p.target.Close()
		}
	}()

	before := heapAfterGC()

	ctx, cancel := context.WithCancel(context.Background())
	var counters Counters
	var wg sync.WaitGroup
	defer wg.Wait() // runs after the cancel below
	defer cancel()
	for _, p := range pairs {
		wg.Go(func() {
			Relay(ctx, TCPConn(p.gw), TCPConn(p.upstream), Options{Counters: &counters})
		})
	}

	// A burst each way through every session.
	msg := make([]byte, burst)
	got := make([]byte, burst)
	var peak int64
	for i, p := range pairs {
		if _, err := p.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.target, got); err != nil {
			t.Fatal(err)
		}
		if _, err := p.target.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.client, got); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		peak = max(peak, counters.BuffersHeld())
	}
	if peak == 0 {
		t.Fatal("no session ever borrowed a pooled buffer: the test does not exercise the release")
	}
	if !waitFor(10*time.Second, func() bool { return counters.BuffersHeld() == 0 }) {
		t.Fatalf("%d pooled buffers still held by idle sessions", counters.BuffersHeld())
	}

	after := heapAfterGC()
	heap := int64(after.HeapInuse) - int64(before.HeapInuse)
	stack := int64(after.StackInuse) - int64(before.StackInuse)
	t.Logf("%d idle relays (peak %d pooled buffers during the bursts): heap in use +%d B (%d B/session), goroutine stacks +%d B (%d B/session)",
		sessions, peak, heap, heap/sessions, stack, stack/sessions)
	if tcpWaits && heap > sessions*waitingLimit {
		t.Fatalf("idle sessions use %d B of heap each, want < %d: TCP endpoints wait for data without a buffer", heap/sessions, waitingLimit)
	}
	if heap > sessions*limit {
		t.Fatalf("idle sessions use %d B of heap each, want < %d (2 pooled buffers would be %d)", heap/sessions, limit, 2*bufferSize)
	}
}

// heapAfterGC returns the memory statistics after the pool's buffers have
// been collected (sync.Pool keeps them across one GC cycle).
func heapAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
