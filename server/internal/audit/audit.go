// Package audit writes the session audit (DESIGN.md §10) off the sessions'
// path. The broker hands a Writer each session's record twice — when the
// session opens and when it ends — and Record only queues it; the Writer's
// one goroutine writes what is queued in batches, one store transaction
// (store.Store.RecordSessions) per batch. A session that ends before its
// start was written costs one row write, not two.
//
// What it promises:
//   - a record is written at most Config.FlushInterval (100 ms) after it
//     was queued, plus the time of its batch's write (and of the write, or
//     retries, still going on before it, when the store is slow);
//   - Close writes everything queued before it returns (bounded by
//     Config.CloseTimeout), so a clean stop loses nothing; a crash loses
//     at most what was queued and not yet written;
//   - Record never blocks: when the queue is full the record is dropped,
//     counted (outpost_audit_records_dropped_total{reason="queue_full"})
//     and warned about. A store that fails is tried Config.Attempts times
//     per batch, then the batch is dropped, counted (reason "store_error")
//     and logged at ERROR. Neither slows session setup down.
//
// Why drop rather than block when the queue is full: the queue holds
// seconds of sessions (8,192 records by default), so it fills only when the
// store has stopped keeping up or answering; blocking then would turn a
// slow or absent store into refused or stalled sessions, while DESIGN.md
// §10 wants live sessions to keep running without the store. The loss is
// visible (a counter and a WARN at most every 10 s), and a session whose
// start was dropped is still recorded whole by its end.
package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/store"
)

// Store is where the records go; store.Store is one.
type Store interface {
	// RecordSessions writes a batch in one transaction, all or none,
	// harmlessly again after an unknown outcome (see store.Store).
	RecordSessions(ctx context.Context, recs []store.SessionRecord) error
}

// Defaults of Config.
const (
	DefaultQueueSize     = 8192
	DefaultMaxBatch      = 256
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultWriteTimeout  = 5 * time.Second
	DefaultAttempts      = 3
	DefaultRetryPause    = 100 * time.Millisecond
	DefaultCloseTimeout  = 10 * time.Second
)

// warnEvery is how often, at most, a full queue is warned about.
const warnEvery = 10 * time.Second

// Drop reasons, the label of metrics.AuditRecordsDropped.
const (
	DropQueueFull  = "queue_full"
	DropStoreError = "store_error"
	DropClosed     = "closed"
	DropInvalid    = "invalid"
)

// Config tunes a Writer. The zero value is usable.
type Config struct {
	// QueueSize is how many records may wait to be written; one more is
	// dropped. If zero, DefaultQueueSize (8,192).
	QueueSize int
	// MaxBatch is the most records written in one transaction; a queue
	// this long is written at once. If zero, DefaultMaxBatch (256).
	MaxBatch int
	// FlushInterval is the longest a record waits in the queue before the
	// batch holding it is written. If zero, DefaultFlushInterval (100 ms).
	FlushInterval time.Duration
	// WriteTimeout bounds each attempt to write a batch. If zero,
	// DefaultWriteTimeout (5 s).
	WriteTimeout time.Duration
	// Attempts is how many times a batch is tried before it is dropped.
	// If zero, DefaultAttempts (3).
	Attempts int
	// RetryPause is the pause after the first failed attempt; it doubles
	// after each further one. If zero, DefaultRetryPause (100 ms).
	RetryPause time.Duration
	// CloseTimeout bounds how long Close writes what is queued; what is
	// left then is dropped. If zero, DefaultCloseTimeout (10 s).
	CloseTimeout time.Duration
	// Metrics, if set, counts written and dropped records and shows the
	// queue's length.
	Metrics *metrics.Metrics
	// Logger receives drops (WARN for a full queue, ERROR otherwise) and
	// retries (DEBUG). If nil, logs are discarded.
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	if c.RetryPause <= 0 {
		c.RetryPause = DefaultRetryPause
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// errCloseTimeout ends the writes still going when Close's time is up.
var errCloseTimeout = errors.New("audit: close timed out")

// Writer queues session audit records and writes them in batches. Build it
// with New, which starts its goroutine; Close stops it. Its methods are
// safe for concurrent use.
type Writer struct {
	st  Store
	cfg Config
	log hclog.Logger

	// ctx ends when Close's time is up (or once Close returned): the
	// writes and pauses still going end, and the rest is dropped.
	ctx   context.Context
	abort context.CancelCauseFunc

	wake chan struct{} // capacity 1: records queued, a flush asked for, or closing
	done chan struct{} // closed when run returns

	closeOnce sync.Once
	closeErr  error

	mu sync.Mutex
	// Guarded by mu. Records are numbered in the order they were queued;
	// they are settled (written or dropped) in that order.
	queue     []store.SessionRecord // waiting, oldest first
	spare     []store.SessionRecord // a written batch's buffer, for the next queue
	oldest    time.Time             // when the oldest waiting record (or an older one) was queued
	queued    uint64                // records queued, ever
	settled   uint64                // records settled, ever
	settledCh chan struct{}         // closed and replaced when settled grows
	flushTo   uint64                // write without waiting until settled reaches it
	closing   bool
	lost      int   // records queued before Close that were dropped
	lostErr   error // why the last of them were
	fullDrops int   // records dropped for a full queue since the last warning
	warnedAt  time.Time
}

// New starts a Writer that writes to st; Close stops it.
func New(st Store, cfg Config) (*Writer, error) {
	if st == nil {
		return nil, errors.New("audit: a store is required")
	}
	cfg = cfg.withDefaults()
	w := &Writer{st: st, cfg: cfg, log: cfg.Logger,
		wake: make(chan struct{}, 1), done: make(chan struct{}), settledCh: make(chan struct{})}
	w.ctx, w.abort = context.WithCancelCause(context.Background())
	go w.run()
	return w, nil
}

// Record queues rec to be written: at a session's start (EndedAt zero) and
// at its end (the whole record again, EndedAt set). It never blocks. A
// record is dropped, counted and logged when it is invalid (no id, a
// negative byte count), when the queue is full, or after Close.
func (w *Writer) Record(rec store.SessionRecord) {
	if err := rec.Validate(); err != nil {
		w.count(DropInvalid, 1)
		w.log.Error("session audit record dropped", "reason", DropInvalid, "session_id", rec.ID, "error", err)
		return
	}
	w.mu.Lock()
	switch {
	case w.closing:
		w.mu.Unlock()
		w.count(DropClosed, 1)
		w.log.Error("session audit record dropped: recorded after the audit writer closed", "reason", DropClosed, "session_id", rec.ID)
		return
	case len(w.queue) >= w.cfg.QueueSize:
		w.fullDrops++
		var n int
		if now := time.Now(); now.Sub(w.warnedAt) >= warnEvery {
			n, w.fullDrops, w.warnedAt = w.fullDrops, 0, now
		}
		w.mu.Unlock()
		w.count(DropQueueFull, 1)
		if n > 0 {
			w.log.Warn("session audit queue full: records dropped (the store is not keeping up)", "reason", DropQueueFull,
				"dropped", n, "queue_size", w.cfg.QueueSize, "warn_every", warnEvery)
		}
		return
	}
	if len(w.queue) == 0 {
		w.oldest = time.Now()
	}
	w.queue = append(w.queue, rec)
	w.queued++
	w.gauge(len(w.queue))
	w.mu.Unlock()
	w.signal()
}

// Flush writes what is queued now, without waiting for FlushInterval, and
// returns once it is written or dropped, or ctx's error when ctx ends first.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.queued
	w.flushTo = max(w.flushTo, target)
	w.mu.Unlock()
	w.signal()
	for {
		w.mu.Lock()
		settled, ch := w.settled, w.settledCh
		w.mu.Unlock()
		if settled >= target {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close writes what is queued, within Config.CloseTimeout (then drops the
// rest), stops the goroutine and returns once it has. Records after Close
// are dropped. It returns an error when records queued before it were
// dropped because the store failed or the time ran out. It is idempotent.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		w.signal()
		t := time.NewTimer(w.cfg.CloseTimeout)
		select {
		case <-w.done:
		case <-t.C:
			w.abort(errCloseTimeout)
			<-w.done
		}
		t.Stop()
		w.abort(errors.New("audit: closed"))
		w.mu.Lock()
		if w.lost > 0 {
			w.closeErr = fmt.Errorf("audit: %d session record(s) dropped at close: %w", w.lost, w.lostErr)
		}
		w.mu.Unlock()
	})
	return w.closeErr
}

// signal wakes the goroutine if it sleeps.
func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes batches until Close, then what is left.
func (w *Writer) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch, ok := w.next(timer)
		if !ok {
			return
		}
		err := w.write(batch)
		w.settle(batch, err)
	}
}

// next waits until a batch is due — the oldest record has waited
// FlushInterval, MaxBatch records wait, a flush was asked for, or Close
// was called — and takes it off the queue. It returns false when the
// Writer is closing and nothing is left.
func (w *Writer) next(timer *time.Timer) ([]store.SessionRecord, bool) {
	for {
		w.mu.Lock()
		n := len(w.queue)
		if n == 0 && w.closing {
			w.mu.Unlock()
			return nil, false
		}
		wait := w.cfg.FlushInterval - time.Since(w.oldest)
		if n > 0 && (wait <= 0 || n >= w.cfg.MaxBatch || w.closing || w.flushTo > w.settled) {
			batch := w.takeLocked()
			w.mu.Unlock()
			return batch, true
		}
		w.mu.Unlock()
		if n == 0 {
			<-w.wake
			continue
		}
		timer.Reset(wait)
		select {
		case <-w.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// takeLocked removes the next batch, at most MaxBatch records, from the
// queue. The records left keep the oldest time, so they are due no later
// than they were.
func (w *Writer) takeLocked() []store.SessionRecord {
	if len(w.queue) <= w.cfg.MaxBatch {
		batch := w.queue
		w.queue, w.spare = w.spare[:0], nil
		w.gauge(0)
		return batch
	}
	batch := make([]store.SessionRecord, w.cfg.MaxBatch)
	copy(batch, w.queue)
	rest := copy(w.queue, w.queue[w.cfg.MaxBatch:])
	clear(w.queue[rest:])
	w.queue = w.queue[:rest]
	w.gauge(rest)
	return batch
}

// write writes batch, trying again after a failure up to Attempts times
// in all, and returns the last error if every attempt failed. Once the
// Writer is aborted it tries no more.
func (w *Writer) write(batch []store.SessionRecord) error {
	pause := w.cfg.RetryPause
	for attempt := 1; ; attempt++ {
		if err := context.Cause(w.ctx); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.WriteTimeout)
		err := w.st.RecordSessions(ctx, batch)
		cancel()
		if err == nil {
			return nil
		}
		if attempt >= w.cfg.Attempts || errors.Is(err, store.ErrInvalid) {
			return fmt.Errorf("%d attempt(s): %w", attempt, err)
		}
		w.log.Debug("writing the session audit failed; retrying", "records", len(batch), "attempt", attempt, "pause", pause, "error", err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			return errors.Join(err, context.Cause(w.ctx))
		}
		pause *= 2
	}
}

// settle counts batch as written, or as dropped with err, and wakes the
// flushes waiting for it.
func (w *Writer) settle(batch []store.SessionRecord, err error) {
	if err == nil {
		if m := w.cfg.Metrics; m != nil {
			m.AuditRecordsWritten.Add(float64(len(batch)))
		}
	} else {
		w.count(DropStoreError, len(batch))
		w.log.Error("session audit records dropped: the store failed", "reason", DropStoreError, "records", len(batch),
			"first_session_id", batch[0].ID, "error", err)
	}
	clear(batch)
	w.mu.Lock()
	if err != nil && w.closing {
		w.lost += len(batch)
		w.lostErr = err
	}
	w.settled += uint64(len(batch))
	close(w.settledCh)
	w.settledCh = make(chan struct{})
	if cap(batch) <= 2*w.cfg.MaxBatch { // a burst's larger buffer is let go
		w.spare = batch[:0]
	}
	w.mu.Unlock()
}

// count adds n records dropped for reason to the metrics.
func (w *Writer) count(reason string, n int) {
	if m := w.cfg.Metrics; m != nil {
		m.AuditRecordsDropped.WithLabelValues(reason).Add(float64(n))
	}
}

// gauge shows the queue's length n in the metrics.
func (w *Writer) gauge(n int) {
	if m := w.cfg.Metrics; m != nil {
		m.AuditQueued.Set(float64(n))
	}
}
