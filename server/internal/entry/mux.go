package entry

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/token"
)

// upgradeWriteTimeout bounds the write of the 101 answer.
const upgradeWriteTimeout = 10 * time.Second

// errConnectionLost ends the sessions of a standing connection that ended:
// its client is gone, as for broker.ErrClientGone.
var errConnectionLost = &broker.Limit{Outcome: broker.ErrClientGone.Outcome, Reason: "the client's connection was lost"}

// lostGrace is how long the sessions of a connection that ended may take
// to see it on their own streams, with whatever the client sent before it
// (a reset, say), before the ones still opening are ended.
const lostGrace = time.Second

// drainLinger is how long a draining connection whose last session ended
// stays open for the client to close it: the client's last frames (the END
// of that session, say) may still be on their way, and yamux reports a
// frame as lost when the connection ends before it learns that the frame
// was written.
const drainLinger = time.Second

// serveMux handles GET /v1/connect with "Upgrade: outpost-mux/1": a
// standing connection (client/muxstream) authenticated once by the token,
// whose streams are sessions, each authorized on its own (authorize). The
// request was counted in h.sessions by ServeHTTP.
func (h *Handler) serveMux(w http.ResponseWriter, r *http.Request, log hclog.Logger, raw string) {
	if status, reason := muxUpgradeProblem(w.Header(), r); status != 0 {
		refuse(w, log, status, reason+"; the session token was not used")
		return
	}
	// Browsers cannot ask for this upgrade; a request from a page that
	// carries one anyway meets the same origin policy as a WebSocket.
	claims, log, ok := h.authenticate(w, r, log, raw, "token_id")
	if !ok {
		return
	}
	client := h.clientAddr(r)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		refuse(w, log, http.StatusInternalServerError, "cannot take over the connection: "+err.Error())
		return
	}
	// The server's own deadlines end with the request; the connection's
	// keepalive bounds it from now on. The 101 answer gets a deadline of
	// its own.
	_ = conn.SetDeadline(time.Now().Add(upgradeWriteTimeout))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %d\r\n\r\n",
		muxstream.UpgradeToken, muxstream.MaxStreamsHeader, h.cfg.MaxStreamsPerConnection)
	if err := brw.Flush(); err != nil {
		log.Info("standing connection lost during the upgrade", "error", err)
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	ylog := log.Named("yamux")
	sess, err := yamux.Server(muxstream.Conn{Reader: muxstream.NewGuard(brw.Reader, h.cfg.Now), WriteCloser: conn},
		muxstream.Config(h.cfg.KeepAlive, func(msg string) { ylog.Debug(msg) }))
	if err != nil {
		// Only a bad configuration fails here.
		log.Error("standing connection: yamux", "error", err)
		conn.Close()
		return
	}
	c := &muxConn{h: h, sess: sess, claims: claims, client: client, log: log,
		slots: make(chan struct{}, h.cfg.MaxStreamsPerConnection)}
	c.ctx, c.cancel = context.WithCancelCause(h.ctx)
	log.Info("standing connection open")
	h.sessions.Add(1) // while this handler's count still holds the drain
	go c.serve()
}

// muxConn is one standing connection: a yamux session whose streams are
// sessions of one token.
type muxConn struct {
	h      *Handler
	sess   *yamux.Session
	claims token.SessionClaims
	client string // the client's address, for the audit
	log    hclog.Logger
	// ctx is the parent of the connection's sessions; it ends with the
	// connection (cause errConnectionLost) or with the entry.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// slots holds a token per session the connection carries, up to
	// Config.MaxStreamsPerConnection.
	slots chan struct{}

	mu       sync.Mutex
	active   int           // streams being served; guarded by mu
	whenIdle chan struct{} // closed when active drops to 0; guarded by mu

	streams sync.WaitGroup // the goroutines of the streams

	uses reservation // the token's uses and key check, shared by the streams
}

// serve accepts the connection's streams until it ends, then waits for the
// sessions they carry. When the entry stops, it says GoAway (the client
// opens its next sessions elsewhere; streams that race it are refused with
// the reason) and closes the connection once its sessions are over.
func (c *muxConn) serve() {
	defer c.h.sessions.Done()
	var ends sync.WaitGroup
	defer ends.Wait()
	ends.Go(c.watch)
	for {
		st, err := c.sess.AcceptStream()
		if err != nil || c.flooding() {
			break
		}
		c.enter()
		c.streams.Go(func() {
			defer c.leave()
			c.serveStream(st)
		})
	}
	c.streams.Wait()
	c.sess.Close()
	c.cancel(errConnectionLost)
	c.uses.giveBack(c.h, c.claims, c.log)
	c.log.Info("standing connection closed")
}

// watch ends the connection's sessions when it ends (errConnectionLost),
// ends the connection with the entry, and drains it when the entry stops.
func (c *muxConn) watch() {
	select {
	case <-c.sess.CloseChan():
		c.lost()
		return
	case <-c.ctx.Done():
		c.sess.Close()
		return
	case <-c.h.drain.Done():
	}
	_ = c.sess.GoAway()
	select {
	case <-c.idle():
	case <-c.sess.CloseChan():
		c.lost()
		return
	case <-c.ctx.Done():
		c.sess.Close()
		return
	}
	if c.sess.NumStreams() > 0 {
		// The last session just ended: give the client its turn to close.
		t := time.NewTimer(drainLinger)
		defer t.Stop()
		select {
		case <-c.sess.CloseChan():
		case <-t.C:
		case <-c.ctx.Done():
		}
	}
	c.sess.Close()
}

// lost ends the sessions of a connection that ended, after lostGrace: the
// sessions that relay see the end on their streams first, after what the
// client sent before it; the grace ends those still opening.
func (c *muxConn) lost() {
	t := time.NewTimer(lostGrace)
	defer t.Stop()
	select {
	case <-t.C:
		c.cancel(errConnectionLost)
	case <-c.ctx.Done():
	}
}

// enter and leave count the streams being served.
func (c *muxConn) enter() {
	c.mu.Lock()
	c.active++
	c.mu.Unlock()
}

func (c *muxConn) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active--
	if c.active == 0 && c.whenIdle != nil {
		close(c.whenIdle)
		c.whenIdle = nil
	}
}

// idle returns a channel closed once no stream is being served.
func (c *muxConn) idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	if c.active == 0 {
		close(ch)
	} else {
		c.whenIdle = ch
	}
	return ch
}

// slotWait is how long a session past the connection's cap waits for one
// to end before it is refused: the client counts a session as ended once
// it has its end, the gateway a little later.
const slotWait = time.Second

// flooding reports whether the client keeps more streams open than twice
// the cap (sessions, ones waiting for a slot, refused ones it did not
// close), and closes the connection if so.
func (c *muxConn) flooding() bool {
	max := c.h.cfg.MaxStreamsPerConnection
	if c.sess.NumStreams() <= 2*max {
		return false
	}
	c.log.Info("standing connection closed: the client opens streams past its cap", "max_streams", max)
	c.sess.Close()
	return true
}

// acquire takes one of the connection's slots, waiting up to slotWait.
func (c *muxConn) acquire() bool {
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-c.ctx.Done():
	}
	return false
}

// refuse tells the client why a stream is not served, and logs it.
func (c *muxConn) refuse(s *muxstream.Stream, reason string) {
	c.log.Info("session refused", "stream", s.ID(), "reason", reason)
	s.Fail(reason)
}

// serveStream authorizes one stream and serves its session, in one of
// the connection's slots. The slot is free again as soon as the session's
// stream ends, so that the client, which counts its sessions as they end on
// its side, finds it for its next one (the audit of the session goes on).
func (c *muxConn) serveStream(st *yamux.Stream) {
	s := muxstream.New(st)
	if !c.acquire() {
		c.refuse(s, fmt.Sprintf("this connection carries its maximum of %d sessions at once", c.h.cfg.MaxStreamsPerConnection))
		return
	}
	var once sync.Once
	release := func() { once.Do(func() { <-c.slots }) }
	defer release()
	// The checks call the store, whose driver grows a deep stack: they run
	// on a goroutine of their own, so that this one, which relays the
	// session, keeps a small stack.
	var reason string
	done := make(chan struct{})
	go func() {
		defer close(done)
		reason = c.authorize()
	}()
	<-done
	if reason != "" {
		c.refuse(s, reason)
		return
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	sess := &session{clientStream: &releasing{Stream: s, release: release}, cancel: cancel}
	h := c.h
	if !h.live.add(sess) {
		c.refuse(s, fmt.Sprintf("the gateway holds its maximum of %d client sessions; try again later", h.cfg.MaxSessions))
		return
	}
	defer h.live.remove(sess)
	req := broker.Request{
		Target: c.claims.Target, AgentID: c.claims.AgentID,
		Client: c.client, KeyID: c.claims.KeyID(), MaxDuration: h.maxDuration(c.claims),
	}
	// A single-use token's one session has the token's id; a reusable
	// token's sessions get ids of their own.
	if !c.claims.Reusable {
		if id, err := uuid.Parse(c.claims.ID); err == nil {
			req.ID = dataplane.SessionID(id)
		}
	}
	h.cfg.Broker.Serve(ctx, req, sess)
}

// releasing is a session's stream that calls release when it ends.
type releasing struct {
	*muxstream.Stream
	release func()
}

func (r *releasing) Close() error {
	r.release()
	return r.Stream.Close()
}

func (r *releasing) Abort(code uint64) {
	r.Stream.Abort(code)
	r.release()
}

func (r *releasing) Fail(reason string) {
	r.Stream.Fail(reason)
	r.release()
}

// authorize checks what may have changed since the connection was
// authenticated, then counts the session against the token's cap: the
// entry is serving, the token has not expired, its API key is still live.
// It returns why the session is refused, or "".
func (c *muxConn) authorize() string {
	h := c.h
	if !h.serving.Load() {
		return "the gateway is shutting down"
	}
	if exp := c.claims.ExpiresAt; exp != nil && !h.cfg.Now().Before(exp.Time) {
		return fmt.Sprintf("session token refused: %v (expired at %s)", token.ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if h.live.full() {
		// Before the token's use is counted, as for a WebSocket.
		return fmt.Sprintf("the gateway holds its maximum of %d client sessions; try again later", h.cfg.MaxSessions)
	}
	ctx, cancel := context.WithTimeout(c.ctx, authorizeTimeout)
	defer cancel()
	return c.uses.authorize(ctx, h, c.claims)
}

// authorizeTimeout bounds the store calls that authorize a stream.
const authorizeTimeout = 10 * time.Second

// isMuxUpgrade reports whether r asks for a standing connection.
func isMuxUpgrade(r *http.Request) bool {
	return hasToken(r.Header, "Upgrade", muxstream.UpgradeToken)
}

// muxUpgradeProblem returns why r, which asks for a standing connection,
// cannot have one, with the status to answer, or 0.
func muxUpgradeProblem(hdr http.Header, r *http.Request) (int, string) {
	if status, reason := upgradeRequestProblem(hdr, r, "the standing connection", ""); status != 0 {
		return status, reason
	}
	switch {
	case !hasToken(r.Header, "Connection", "upgrade"):
		hdr.Set("Connection", "Upgrade")
		hdr.Set("Upgrade", muxstream.UpgradeToken)
		return http.StatusUpgradeRequired, "the standing connection needs Connection: Upgrade"
	}
	return 0, ""
}
