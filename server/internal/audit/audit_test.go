package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/store"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// fakeStore records the batches written to it. Each call waits for gate
// (when set) or its context, then fails with fail's answer (when set).
type fakeStore struct {
	mu      sync.Mutex
	batches [][]store.SessionRecord // guarded by mu
	calls   int                     // guarded by mu
	gate    chan struct{}
	fail    func(call int) error
}

func (f *fakeStore) RecordSessions(ctx context.Context, recs []store.SessionRecord) error {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.mu.Unlock()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.fail != nil {
		if err := f.fail(call); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(recs))
	f.mu.Unlock()
	return nil
}

// written returns the batches written so far.
func (f *fakeStore) written() [][]store.SessionRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// records returns how many records were written in all.
func (f *fakeStore) records() int {
	n := 0
	for _, b := range f.written() {
		n += len(b)
	}
	return n
}

// harness is a Writer on st with its metrics and logs.
type harness struct {
	*Writer
	m    *metrics.Metrics
	logs *testlog.Writer
}

func newHarness(t *testing.T, st Store, cfg Config) *harness {
	t.Helper()
	h := &harness{m: metrics.New(), logs: testlog.New(t)}
	cfg.Metrics = h.m
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "audit", Level: hclog.Debug, Output: h.logs})
	w, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Writer = w
	t.Cleanup(func() { w.Close() })
	return h
}

func (h *harness) dropped(reason string) int {
	return int(testutil.ToFloat64(h.m.AuditRecordsDropped.WithLabelValues(reason)))
}

func (h *harness) writtenCount() int { return int(testutil.ToFloat64(h.m.AuditRecordsWritten)) }

// start and end are a session's two records.
func start(id string) store.SessionRecord {
	return store.SessionRecord{ID: id, Target: "db:5432", StartedAt: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func end(id string, up int64) store.SessionRecord {
	r := start(id)
	r.EndedAt, r.BytesUp, r.BytesDown, r.Outcome = r.StartedAt.Add(time.Second), up, up, "ok"
	return r
}

// A record is written FlushInterval after it was queued, not before, and
// the records queued meanwhile go in the same batch.
func TestFlushInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		h := newHarness(t, st, Config{})
		h.Record(start("a"))
		time.Sleep(60 * time.Millisecond)
		h.Record(end("a", 7))
		h.Record(start("b"))
		time.Sleep(40*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if n := len(st.written()); n != 0 {
			t.Fatalf("%d batches written before 100 ms", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		got := st.written()
		if len(got) != 1 || len(got[0]) != 3 || got[0][0].ID != "a" || got[0][1].Outcome != "ok" || got[0][2].ID != "b" {
			t.Fatalf("at 100 ms: %+v; want one batch of a's start and end and b's start", got)
		}
		if h.writtenCount() != 3 {
			t.Errorf("written counter %d, want 3", h.writtenCount())
		}
		// The next record waits its own 100 ms.
		h.Record(end("b", 1))
		time.Sleep(99 * time.Millisecond)
		synctest.Wait()
		if n := len(st.written()); n != 1 {
			t.Fatalf("%d batches 99 ms after the next record, want 1", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := len(st.written()); n != 2 {
			t.Fatalf("%d batches 100 ms after the next record, want 2", n)
		}
	})
}

// MaxBatch records are written at once, in batches of at most MaxBatch.
func TestMaxBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		h := newHarness(t, st, Config{MaxBatch: 4})
		for i := range 10 {
			h.Record(start(fmt.Sprint(i)))
		}
		synctest.Wait()
		// Two full batches without waiting; the last two wait their turn.
		if got := st.written(); len(got) != 2 || len(got[0]) != 4 || len(got[1]) != 4 {
			t.Fatalf("batches at once: %d %v", len(got), got)
		}
		time.Sleep(DefaultFlushInterval)
		synctest.Wait()
		got := st.written()
		if len(got) != 3 || len(got[2]) != 2 || got[2][1].ID != "9" {
			t.Fatalf("batches after the interval: %v", got)
		}
	})
}

// Flush writes at once and returns when the records are written.
func TestFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		h := newHarness(t, st, Config{})
		if err := h.Flush(t.Context()); err != nil {
			t.Fatalf("Flush of nothing: %v", err)
		}
		h.Record(start("a"))
		before := time.Now()
		if err := h.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if time.Since(before) != 0 || st.records() != 1 {
			t.Fatalf("Flush took %v and wrote %d records; want at once, 1", time.Since(before), st.records())
		}
		// A Flush whose context ends first returns its error.
		st.gate = make(chan struct{})
		h.Record(start("b"))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := h.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush with a blocked store: %v", err)
		}
		close(st.gate)
		if err := h.Flush(t.Context()); err != nil || st.records() != 2 {
			t.Fatalf("Flush once the store answers: %v, %d records", err, st.records())
		}
	})
}

// A full queue drops what comes next at once, counts it and warns once per
// 10 s; what was queued is still written.
func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{gate: make(chan struct{})}
		h := newHarness(t, st, Config{QueueSize: 4, MaxBatch: 4})
		// The first four are taken as a batch and wait for the store; four
		// more fill the queue; the next three are dropped.
		for i := range 4 {
			h.Record(start(fmt.Sprint(i)))
		}
		synctest.Wait()
		for i := 4; i < 11; i++ {
			h.Record(start(fmt.Sprint(i))) // returns at once, full or not
		}
		if n := h.dropped(DropQueueFull); n != 3 {
			t.Errorf("%d dropped for a full queue, want 3", n)
		}
		if got := testutil.ToFloat64(h.m.AuditQueued); got != 4 {
			t.Errorf("queue gauge %v, want 4", got)
		}
		if n := strings.Count(h.logs.String(), "session audit queue full"); n != 1 {
			t.Errorf("%d warnings, want 1:\n%s", n, h.logs)
		}
		if !h.logs.Contains("[WARN]  audit: session audit queue full") || !h.logs.Contains("dropped=1") {
			t.Errorf("warning:\n%s", h.logs)
		}
		// 10 s later the next drop warns again, with the count since.
		time.Sleep(warnEvery)
		h.Record(start("x"))
		if n := strings.Count(h.logs.String(), "session audit queue full"); n != 2 || !h.logs.Contains("dropped=3") {
			t.Errorf("%d warnings, want 2, the second with dropped=3:\n%s", n, h.logs)
		}
		close(st.gate)
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if n := st.records(); n != 8 {
			t.Errorf("%d records written, want the 8 queued", n)
		}
	})
}

// A store that fails is tried Attempts times with growing pauses; a batch
// that fails every time is dropped, counted and logged at ERROR, and
// Record never waits meanwhile.
func TestStoreErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := fmt.Errorf("%w: connection refused", store.ErrUnavailable)
		var failing sync.Mutex
		failUntil := 2 // calls 1 and 2 fail
		st := &fakeStore{fail: func(call int) error {
			failing.Lock()
			defer failing.Unlock()
			if call <= failUntil {
				return down
			}
			return nil
		}}
		h := newHarness(t, st, Config{})
		h.Record(start("a"))
		t0 := time.Now()
		if err := h.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Pauses of 100 ms then 200 ms before the third, successful attempt.
		if took := time.Since(t0); took != 300*time.Millisecond || st.records() != 1 || h.dropped(DropStoreError) != 0 {
			t.Fatalf("retries took %v, wrote %d, dropped %d; want 300ms, 1, 0", took, st.records(), h.dropped(DropStoreError))
		}

		failing.Lock()
		failUntil = 1 << 30 // down for good
		failing.Unlock()
		h.Record(start("b"))
		h.Record(end("b", 1))
		t0 = time.Now()
		h.Record(start("c")) // never waits, whatever the store does
		if time.Since(t0) != 0 {
			t.Error("Record waited")
		}
		if err := h.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := h.dropped(DropStoreError); n != 3 {
			t.Errorf("%d dropped for store errors, want 3", n)
		}
		if !h.logs.Contains("[ERROR] audit: session audit records dropped: the store failed") || !h.logs.Contains("records=3") ||
			!h.logs.Contains("3 attempt(s)") {
			t.Errorf("no ERROR line for the drop:\n%s", h.logs)
		}
	})
}

// An invalid record is dropped when recorded; the ones around it are
// written.
func TestInvalidRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		h := newHarness(t, st, Config{})
		h.Record(start("a"))
		h.Record(store.SessionRecord{Target: "no id"})
		h.Record(store.SessionRecord{ID: "neg", BytesUp: -1})
		h.Record(start("b"))
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if st.records() != 2 || h.dropped(DropInvalid) != 2 || !h.logs.Contains("[ERROR]") {
			t.Errorf("%d written, %d dropped as invalid; want 2, 2, logged:\n%s", st.records(), h.dropped(DropInvalid), h.logs)
		}
	})
}

// Close writes what is queued at once; a record after Close is dropped.
func TestCloseFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{}
		h := newHarness(t, st, Config{MaxBatch: 3})
		for i := range 10 {
			h.Record(end(fmt.Sprint(i), int64(i)))
		}
		t0 := time.Now()
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if time.Since(t0) != 0 || st.records() != 10 {
			t.Fatalf("Close took %v, wrote %d; want at once, 10", time.Since(t0), st.records())
		}
		if err := h.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		h.Record(start("late"))
		if h.dropped(DropClosed) != 1 || st.records() != 10 {
			t.Errorf("a record after Close: %d dropped, %d written", h.dropped(DropClosed), st.records())
		}
		if err := h.Flush(t.Context()); err != nil {
			t.Errorf("Flush after Close: %v", err)
		}
	})
}

// Close gives up after CloseTimeout, drops what is left and says so.
func TestCloseTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStore{gate: make(chan struct{})} // never answers
		h := newHarness(t, st, Config{MaxBatch: 2})
		for i := range 5 {
			h.Record(start(fmt.Sprint(i)))
		}
		t0 := time.Now()
		err := h.Close()
		if took := time.Since(t0); took != DefaultCloseTimeout {
			t.Errorf("Close took %v, want %v", took, DefaultCloseTimeout)
		}
		if err == nil || !strings.Contains(err.Error(), "5 session record(s) dropped") {
			t.Errorf("Close: %v", err)
		}
		if h.dropped(DropStoreError) != 5 {
			t.Errorf("%d dropped, want 5", h.dropped(DropStoreError))
		}
	})
}

// backends are the real stores the writer is tested on.
var backends = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"sqlite", func(t *testing.T) store.Store {
		s, err := store.OpenSQLite(t.Context(), t.TempDir()+"/outpost.db", store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) store.Store {
		s, err := store.OpenPostgres(t.Context(), testpg.DSN(t), store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// On a real store: N sessions' starts and ends, then Close, leave N
// finished rows; a start alone shows up on its own (no Flush) while its
// session is open.
func TestRealStores(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := b.open(t)
			h := newHarness(t, st, Config{MaxBatch: 64})
			h.Record(start("live"))
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := st.GetSession(t.Context(), "live"); err == nil {
					break
				} else if !errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) {
					t.Fatalf("the open session's row: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}

			const n = 300
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					id := fmt.Sprintf("s%03d", i)
					h.Record(start(id))
					h.Record(end(id, int64(i)))
				})
			}
			wg.Wait()
			h.Record(end("live", 5))
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				id := fmt.Sprintf("s%03d", i)
				if r, err := st.GetSession(t.Context(), id); err != nil || r.EndedAt.IsZero() || r.BytesUp != int64(i) || r.Outcome != "ok" {
					t.Fatalf("session %s: %+v, %v", id, r, err)
				}
			}
			if r, err := st.GetSession(t.Context(), "live"); err != nil || r.Outcome != "ok" || r.BytesUp != 5 {
				t.Errorf("the live session's end: %+v, %v", r, err)
			}
			if h.writtenCount() != 2*n+2 {
				t.Errorf("written counter %d, want %d", h.writtenCount(), 2*n+2)
			}
		})
	}
}
