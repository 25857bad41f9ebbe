package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/outposthq/outpost/client/muxstream"
)

// Reconnect delays of the standing connection: full jitter over a doubling
// bound from backoffMin up to backoffMax, back to the start after a
// connection that lasted healthyAfter.
const (
	backoffMin   = 200 * time.Millisecond
	backoffMax   = 15 * time.Second
	healthyAfter = 30 * time.Second
)

// errNoStanding is a gateway that offers no standing connection (it
// predates it, or a proxy in the way passes only WebSockets): sessions go
// over one WebSocket each.
var errNoStanding = errors.New("the gateway offers no standing connection")

// RefusedError is the gateway's refusal of a connection: its HTTP status
// and the reason it gave (the body of its answer).
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("gateway refused the session (HTTP %d): %s", e.Status, e.Reason)
}

// permanent reports whether retrying cannot help: the token or the request
// is refused, as opposed to the gateway being busy or stopping.
func (e *RefusedError) permanent() bool {
	switch e.Status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// trustError is a TLS handshake that failed on the gateway's certificate
// (the pin or the CA): no retry fixes it.
type trustError struct{ err error }

func (e *trustError) Error() string { return "the gateway's certificate was refused: " + e.err.Error() }
func (e *trustError) Unwrap() error { return e.err }

// standing is one standing connection to the gateway.
type standing struct {
	sess *yamux.Session
	// slots holds one token per session open on the connection, up to
	// the cap the gateway announced.
	slots chan struct{}
	// retire is closed when new sessions must go elsewhere: the gateway
	// said GoAway.
	retire     chan struct{}
	retireOnce sync.Once
}

func (s *standing) retired() {
	s.retireOnce.Do(func() { close(s.retire) })
}

// usable reports whether new sessions may go on s: it is neither closed
// nor retired (the supervisor is about to replace it).
func (s *standing) usable() bool {
	select {
	case <-s.retire:
		return false
	default:
		return !s.sess.IsClosed()
	}
}

// connState is what sessions waiting for a connection look at; the
// supervisor changes it.
type connState struct {
	mu sync.Mutex
	// Guarded by mu.
	cur       *standing     // the connection new sessions use; nil while down
	lastErr   error         // why the last attempt failed, while down
	fatal     error         // a refusal no retry fixes: sessions fail with it
	webSocket bool          // no standing connection: a WebSocket per session
	changed   chan struct{} // closed, and replaced, at every change
	all       map[*standing]struct{}
}

// set changes the state under the lock and wakes the waiters.
func (s *connState) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
	close(s.changed)
	s.changed = make(chan struct{})
}

// supervise keeps a standing connection up until ctx ends: it connects,
// waits for the connection to end or be retired, and reconnects with
// backoff. It stops for good on a refusal that no retry fixes, or when the
// gateway offers no standing connection.
func (c *Client) supervise(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		conn, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var refused *RefusedError
			var trust *trustError
			switch {
			case errors.Is(err, errNoStanding):
				c.log.Info("the gateway offers no standing connection: one WebSocket per session")
				c.state.set(func() { c.state.webSocket = true })
				return
			case errors.As(err, &refused) && refused.permanent(), errors.As(err, &trust):
				// Every session reports it; no need to say it twice.
				c.log.Debug("the gateway refused the connection; not retrying", "error", err)
				c.state.set(func() { c.state.fatal = err })
				return
			}
			attempt++
			delay := backoff(attempt)
			c.log.Warn("cannot connect to the gateway; retrying", "error", err, "in", delay.Round(time.Millisecond))
			c.state.set(func() { c.state.lastErr = err })
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		start := time.Now()
		c.log.Debug("standing connection open", "max_sessions", cap(conn.slots))
		c.state.set(func() {
			c.state.cur, c.state.lastErr = conn, nil
			for old := range c.state.all {
				if old.sess.IsClosed() {
					delete(c.state.all, old)
				}
			}
			c.state.all[conn] = struct{}{}
		})
		select {
		case <-conn.sess.CloseChan():
		case <-conn.retire:
		case <-ctx.Done():
			return
		}
		lost := conn.sess.IsClosed()
		c.state.set(func() {
			c.state.cur = nil
			c.state.lastErr = errors.New("the connection to the gateway was lost")
			if lost {
				delete(c.state.all, conn)
			}
		})
		if lost {
			c.log.Warn("connection to the gateway lost; reconnecting")
		} else {
			c.log.Info("the gateway asked for a new connection; reconnecting")
		}
		if time.Since(start) > healthyAfter {
			attempt = 0
		}
	}
}

// backoff is the delay before reconnect attempt n (from 1): full jitter
// over min(backoffMax, backoffMin·2^(n-1)).
func backoff(n int) time.Duration {
	limit := backoffMax
	if n < 30 {
		limit = min(backoffMax, backoffMin<<(n-1))
	}
	return rand.N(limit) + 1
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// current waits for a standing connection; it returns nil and no error
// when sessions go over WebSockets instead.
func (c *Client) current(ctx context.Context) (*standing, error) {
	for {
		c.state.mu.Lock()
		cur, ws, fatal, lastErr, changed := c.state.cur, c.state.webSocket, c.state.fatal, c.state.lastErr, c.state.changed
		c.state.mu.Unlock()
		switch {
		case fatal != nil:
			return nil, fatal
		case ws:
			return nil, nil
		case cur != nil && cur.usable():
			return cur, nil
		}
		select {
		case <-changed:
		case <-c.ctx.Done():
			return nil, errClosed
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = context.Cause(ctx)
			}
			return nil, fmt.Errorf("no connection to the gateway: %w", lastErr)
		}
	}
}

// dial opens a standing connection: TLS, the upgrade, yamux.
func (c *Client) dial(ctx context.Context) (*standing, error) {
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", c.entry.Host)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, c.muxTLS)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		if netFailure(err) {
			return nil, fmt.Errorf("tls handshake with %s: %w", c.entry.Host, err)
		}
		return nil, &trustError{err}
	}
	sess, err := c.upgrade(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return sess, nil
}

// netFailure reports whether a handshake error is the network's (worth a
// retry) rather than the certificate's.
func netFailure(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// upgrade asks for the standing connection on conn and starts yamux on it.
func (c *Client) upgrade(ctx context.Context, conn *tls.Conn) (*standing, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n\r\n",
		c.entry.RequestURI(), c.entry.Host, muxstream.UpgradeToken, c.token)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.entry.Host, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.entry.Host, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusUpgradeRequired && hasToken(resp.Header.Values("Upgrade"), "websocket") {
			return nil, errNoStanding
		}
		return nil, &RefusedError{Status: resp.StatusCode, Reason: strings.TrimSpace(string(body))}
	}
	if !hasToken(resp.Header.Values("Upgrade"), muxstream.UpgradeToken) {
		return nil, fmt.Errorf("connect to %s: the gateway switched to %q, not %s", c.entry.Host, resp.Header.Get("Upgrade"), muxstream.UpgradeToken)
	}
	max, err := strconv.Atoi(resp.Header.Get(muxstream.MaxStreamsHeader))
	if err != nil || max < 1 {
		max = muxstream.DefaultMaxStreams
	}
	if !stop() {
		return nil, fmt.Errorf("connect to %s: %w", c.entry.Host, context.Cause(ctx))
	}
	_ = conn.SetDeadline(time.Time{})
	ylog := c.log.Named("yamux")
	sess, err := yamux.Client(muxstream.Conn{Reader: br, WriteCloser: conn}, muxstream.Config(0, func(m string) { ylog.Debug(m) }))
	if err != nil {
		return nil, err
	}
	return &standing{sess: sess, slots: make(chan struct{}, max), retire: make(chan struct{})}, nil
}

// hasToken reports whether comma-separated header values hold token,
// compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// openStream opens a session on a standing connection, waiting for the
// connection (up to ConnectWait) and for a free slot on it.
func (c *Client) openStream(ctx context.Context) (Stream, error) {
	wait, cancel := context.WithTimeoutCause(ctx, c.connectWait,
		fmt.Errorf("waited %v", c.connectWait))
	defer cancel()
	for {
		conn, err := c.current(wait)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case err != nil:
			return nil, err
		case conn == nil:
			return c.OpenWebSocket(ctx)
		}
		select {
		case conn.slots <- struct{}{}:
		case <-conn.sess.CloseChan():
			continue
		case <-conn.retire:
			continue
		case <-wait.Done():
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, fmt.Errorf("the connection to the gateway carries its maximum of %d sessions at once; waited %v", cap(conn.slots), c.connectWait)
		}
		st, err := conn.sess.OpenStream()
		if err != nil {
			<-conn.slots
			if errors.Is(err, yamux.ErrRemoteGoAway) {
				conn.retired()
			}
			continue // the supervisor is on it; wait for the next connection
		}
		return &muxSession{Stream: muxstream.New(st), release: func() { <-conn.slots }}, nil
	}
}

// closeLinger bounds how long closeAll waits for the gateway to finish the
// sessions this side ended.
const closeLinger = time.Second

// closeAll closes every standing connection still open. It first gives
// the gateway up to closeLinger to close the streams of the sessions that
// ended here: a session this side aborted (its local connection was reset)
// is recorded by the gateway as the reset it was, not as a connection lost
// under it, because the gateway reads the RESET before the connection's
// end.
func (c *Client) closeAll() {
	c.state.mu.Lock()
	all := c.state.all
	c.state.all = map[*standing]struct{}{}
	c.state.cur = nil
	c.state.mu.Unlock()
	deadline := time.Now().Add(closeLinger)
	for conn := range all {
		for conn.sess.NumStreams() > 0 && !conn.sess.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		conn.sess.Close()
	}
}

// muxSession is a session on a standing connection; it frees its slot
// when it ends.
type muxSession struct {
	*muxstream.Stream
	release func()
	once    sync.Once
}

func (s *muxSession) Close() error {
	err := s.Stream.Close()
	s.once.Do(s.release)
	return err
}

func (s *muxSession) Abort(code uint64) {
	s.Stream.Abort(code)
	s.once.Do(s.release)
}
