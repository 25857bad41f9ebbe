package entry

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/broker"
)

// Defaults of the session limits in Config.
const (
	DefaultMaxSessions = 100_000
	DefaultKeepAlive   = 30 * time.Second
	DefaultIdleTimeout = time.Hour
)

// clientStream is a session's stream to its client: a WebSocket (wsClient)
// or a stream of a standing connection (*muxstream.Stream).
type clientStream interface {
	broker.ClientStream
	// ReadClosed reports whether the client ended its direction.
	ReadClosed() bool
	// PeerClosed reports whether the client closed the whole session.
	PeerClosed() bool
}

// wsClient is a WebSocket session's stream; Fail closes the WebSocket with
// StatusConnectFailed and the reason.
type wsClient struct{ *wsstream.Stream }

func (c wsClient) Fail(reason string) { c.CloseWithReason(wsstream.StatusConnectFailed, reason) }

// session is one live client session: its stream, when a byte last went
// either way, and how to end it with a cause.
type session struct {
	clientStream
	// ping checks that the client still answers; nil when the standing
	// connection's own keepalive does that for all its sessions.
	ping    func(context.Context) error
	cancel  context.CancelCauseFunc
	last    atomic.Int64 // Unix nanoseconds of the last byte read or written
	pinging atomic.Bool  // a keepalive ping is in flight
}

func (s *session) touch() { s.last.Store(time.Now().UnixNano()) }

// Read reads from the client and marks the session active.
func (s *session) Read(p []byte) (int, error) {
	n, err := s.clientStream.Read(p)
	if n > 0 {
		s.touch()
	}
	if err != nil && err != io.EOF {
		s.ended(err)
	}
	return n, err
}

// WaitRead waits for the client's data without a buffer, when its stream
// can (relay.ReadWaiter).
func (s *session) WaitRead() error { return relay.WaitRead(s.clientStream) }

// Write writes to the client and marks the session active.
func (s *session) Write(p []byte) (int, error) {
	n, err := s.clientStream.Write(p)
	if n > 0 {
		s.touch()
	}
	if err != nil {
		s.ended(err)
	}
	return n, err
}

// ended gives the session the cause its client's failure stands for,
// before the relay records it as an error: once the client closed the
// session, what the target still sends has no reader (ErrClientClosed);
// a lost standing connection is the client gone (errConnectionLost).
func (s *session) ended(err error) {
	switch {
	case s.PeerClosed():
		s.cancel(broker.ErrClientClosed)
	case errors.Is(err, muxstream.ErrConnectionLost):
		s.cancel(errConnectionLost)
	}
}

// CloseWrite passes the target's end to the client, unless the client
// closed the session already.
func (s *session) CloseWrite() error {
	if s.PeerClosed() {
		return nil
	}
	return s.clientStream.CloseWrite()
}

// live tracks the open sessions for the session cap, the keepalive and the
// idle timeout. One watcher goroutine serves them all: an idle session
// costs no goroutine of its own.
type live struct {
	max       int
	keepAlive time.Duration
	idle      time.Duration // 0: no idle timeout

	mu       sync.Mutex
	sessions map[*session]struct{} // guarded by mu

	stop chan struct{}
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup // pings in flight
}

func newLive(max int, keepAlive, idle time.Duration) *live {
	return &live{max: max, keepAlive: keepAlive, idle: idle, sessions: map[*session]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

// add registers s unless the cap is reached.
func (l *live) add(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.sessions) >= l.max {
		return false
	}
	s.touch()
	l.sessions[s] = struct{}{}
	return true
}

// full reports whether the cap is reached now (a cheap early check before
// a token is used; add decides).
func (l *live) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions) >= l.max
}

func (l *live) remove(s *session) {
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
}

// tick is how often the watcher looks at the sessions.
func (l *live) tick() time.Duration {
	t := l.keepAlive
	if l.idle > 0 && l.idle < t {
		t = l.idle
	}
	return min(max(t/4, 10*time.Millisecond), 5*time.Second)
}

// watch ends idle sessions (broker.ErrIdle) and pings quiet ones; a session
// whose client does not answer a ping within the keepalive period ends with
// broker.ErrClientGone. It returns when close is called.
func (l *live) watch() {
	defer close(l.done)
	t := time.NewTicker(l.tick())
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.wg.Wait()
			return
		case <-t.C:
		}
		now := time.Now()
		l.mu.Lock()
		for s := range l.sessions {
			quiet := now.Sub(time.Unix(0, s.last.Load()))
			switch {
			case l.idle > 0 && quiet >= l.idle:
				s.cancel(broker.ErrIdle)
			case quiet >= l.keepAlive && s.ping != nil && s.pinging.CompareAndSwap(false, true):
				l.wg.Add(1)
				go l.ping(s)
			}
		}
		l.mu.Unlock()
	}
}

// ping checks that the client still answers. A pong is read by the relay's
// reader; a client that half-closed its side has no reader any more, so
// only a failed write (not a missing pong) ends such a session. A ping
// that times out closes the WebSocket at once (coder/websocket does so when
// a ping's context ends), so a vanished client gets no close reason; the
// audit records broker.ErrClientGone.
func (l *live) ping(s *session) {
	defer l.wg.Done()
	defer s.pinging.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), l.keepAlive)
	defer cancel()
	err := s.ping(ctx)
	switch {
	case err == nil:
		s.touch()
	case ctx.Err() != nil && s.ReadClosed():
		// No reader for the pong: the client's side is half-closed.
	default:
		s.cancel(broker.ErrClientGone)
	}
}

// close stops the watcher and waits for it and its pings.
func (l *live) close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}
