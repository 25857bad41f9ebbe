package broker

import (
	"context"
	"fmt"
	"sync"

	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// The optimistic first flight (DESIGN.md §9).
//
// While a session opens, its client's first bytes are read (one read, at
// most firstFlightSize bytes). When exactly one agent can serve the session —
// a single candidate, or the last one once every other has failed — they
// are written on its stream right after the ConnectRequest, without waiting
// for the ConnectResponse: the stream is ordered and a v1 agent reads exactly
// one framed message before it relays, so they wait in the stream while the
// agent dials, reach the target once it has accepted, and are dropped with
// the stream if it refuses. The session saves a round trip.
//
// When several candidates may answer (hedging), the bytes go early to none
// of them: the one that wins gets them from the relay, which reads what the
// first flight holds before reading the client again. So the client's bytes
// reach exactly one target, once, and a candidate that loses has forwarded
// nothing.

// firstFlightSize bounds the client's first bytes read while a session
// opens. It holds a TLS ClientHello with a post-quantum key share, an HTTP
// request or a database startup message; a longer first flight sends its
// rest after the answer. A client that sends nothing keeps it until it does.
const firstFlightSize = 4 << 10

// flightPool holds first-flight buffers: they live only while sessions
// open.
var flightPool = sync.Pool{New: func() any { return new([firstFlightSize]byte) }}

// firstFlight is the client's first read of one session, made while the
// session opens. Serve owns it: it starts it, hands it to the opening and
// the relay, and ends it with wait.
type firstFlight struct {
	client ClientStream
	done   chan struct{} // closed once the read returned and any Send it started ended

	mu sync.Mutex
	// Guarded by mu.
	buf     *[firstFlightSize]byte // nil once given back to flightPool
	read    bool                   // the read returned: data and err are set
	data    []byte                 // what the read returned and nobody consumed yet, in buf
	err     error                  // the read's error
	to      *tunnel.Pending        // takes the bytes early once read; set by offer
	toCtx   context.Context
	sent    int   // bytes sent early
	sendErr error // why sending them early failed
}

// startFirstFlight starts reading the client's first bytes.
func startFirstFlight(client ClientStream) *firstFlight {
	f := &firstFlight{client: client, buf: flightPool.Get().(*[firstFlightSize]byte), done: make(chan struct{})}
	go f.readFirst()
	return f
}

func (f *firstFlight) readFirst() {
	defer close(f.done)
	f.mu.Lock()
	buf := f.buf[:]
	f.mu.Unlock()
	n, err := f.client.Read(buf)
	f.mu.Lock()
	f.read, f.data, f.err = true, buf[:n], err
	p, ctx := f.to, f.toCtx
	f.mu.Unlock()
	if p != nil && n > 0 {
		f.send(ctx, p)
	}
}

// offer makes p, whose ConnectRequest was sent and which is the only
// attempt that can serve the session, take the first bytes early: at once
// if they were read, else as soon as they are. ctx bounds the write; it
// must be the session's, not the attempt's, since the write may go on
// after the answer.
func (f *firstFlight) offer(ctx context.Context, p *tunnel.Pending) {
	f.mu.Lock()
	if !f.read {
		f.to, f.toCtx = p, ctx
		f.mu.Unlock()
		return
	}
	n := len(f.data)
	f.mu.Unlock()
	if n > 0 {
		f.send(ctx, p)
	}
}

// send writes the bytes read on p's stream. Only the goroutine that found
// them read (offer) or that read them (readFirst) calls it, once.
func (f *firstFlight) send(ctx context.Context, p *tunnel.Pending) {
	f.mu.Lock()
	data := f.data
	f.mu.Unlock()
	err := p.Send(ctx, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.sendErr = fmt.Errorf("first bytes sent early: %w", err)
		return
	}
	f.sent, f.data = len(data), nil
}

// next is what the relay reads first: the bytes the first flight read and
// did not send early, then the read's error. consumed reports that nothing
// is left and the client's stream is read next. It waits for the read and
// for any early send, so nothing the relay writes can pass them.
func (f *firstFlight) next(p []byte) (n int, consumed bool, err error) {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		return 0, true, f.sendErr
	}
	n = copy(p, f.data)
	f.data = f.data[n:]
	if len(f.data) > 0 {
		return n, false, nil
	}
	f.releaseLocked()
	return n, true, f.err
}

// holds waits for the read and reports whether the relay has anything
// left to read from the first flight; if not, it gives the buffer back.
func (f *firstFlight) holds() bool {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.data) > 0 || f.err != nil || f.sendErr != nil {
		return true
	}
	f.releaseLocked()
	return false
}

// early returns how many bytes went to the agent before its answer.
func (f *firstFlight) early() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(f.sent)
}

// wait waits for the read to end — the client's stream must be closed or
// aborted, or have delivered bytes — and gives the buffer back.
func (f *firstFlight) wait() {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked()
}

func (f *firstFlight) releaseLocked() {
	if f.buf != nil {
		flightPool.Put(f.buf)
		f.buf, f.data = nil, nil
	}
}

// replaying is the client's stream as the relay reads it: first what the
// first flight holds, then the stream itself. Only the relay's reading
// goroutine calls Read.
type replaying struct {
	ClientStream
	f *firstFlight // nil once consumed
}

// WaitRead waits, without a buffer, for the first flight's read and then
// for the client's stream, if it can (relay.ReadWaiter).
func (r *replaying) WaitRead() error {
	if r.f != nil {
		if r.f.holds() {
			return nil
		}
		r.f = nil
	}
	return relay.WaitRead(r.ClientStream)
}

func (r *replaying) Read(p []byte) (int, error) {
	if r.f != nil {
		n, consumed, err := r.f.next(p)
		if consumed {
			r.f = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return r.ClientStream.Read(p)
}
