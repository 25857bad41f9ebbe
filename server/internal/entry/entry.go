// Package entry is the gateway's client entry (DESIGN.md §9): GET /v1/connect
// with a session token, upgraded to a WebSocket whose binary messages carry
// the session's bytes (client/wsstream). It checks the token, consumes a
// single-use one, upgrades, and hands the stream to the session broker. It
// tracks every session it started so that a shutdown can drain them.
package entry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// Path is the entry's URL path.
const Path = "/v1/connect"

// wsReadLimit is the largest WebSocket message the entry accepts.
const wsReadLimit = 1 << 20

// Verifier checks session tokens; *token.Issuer is one.
type Verifier interface {
	VerifySession(raw string) (token.SessionClaims, error)
}

// TokenStore counts the connections session tokens open; store.Store is
// one.
type TokenStore interface {
	UseSessionToken(ctx context.Context, jti string, expiresAt time.Time, max int64) (int64, error)
}

// Config configures a Handler. Every field but Logger is required.
type Config struct {
	Tokens Verifier
	Store  TokenStore
	Broker *broker.Broker
	// Logger may be nil.
	Logger hclog.Logger
}

// Handler serves the entry. Build it with New; it is an http.Handler safe for
// concurrent use. It refuses new sessions (503) until Start and after
// Shutdown begins.
type Handler struct {
	cfg     Config
	log     hclog.Logger
	serving atomic.Bool

	// sessions counts requests in flight and the sessions they started.
	sessions sync.WaitGroup
	// ctx is the parent of every session; cancel ends them all.
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// New checks cfg and returns a Handler that is not yet serving.
func New(cfg Config) (*Handler, error) {
	if cfg.Tokens == nil || cfg.Store == nil || cfg.Broker == nil {
		return nil, errors.New("entry: Tokens, Store and Broker are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.ctx, h.cancel = context.WithCancelCause(context.Background())
	return h, nil
}

// Start lets the handler accept sessions.
func (h *Handler) Start() { h.serving.Store(true) }

// Stop refuses new sessions (503); live ones go on.
func (h *Handler) Stop() { h.serving.Store(false) }

// Shutdown refuses new sessions and waits for the live ones to end. When ctx
// ends first it cancels them and waits for them to return, then returns
// ctx's error.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.Stop()
	drained := make(chan struct{})
	go func() {
		h.sessions.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		h.cancel(errors.New("entry: shutdown timeout"))
		<-drained
		return ctx.Err()
	}
}

// Close cancels every live session at once. It does not wait for them.
func (h *Handler) Close() { h.Stop(); h.cancel(errors.New("entry: closed")) }

// ServeHTTP handles GET /v1/connect. Token problems answer 401 before the
// upgrade; routing and connection failures close the WebSocket with
// wsstream.StatusConnectFailed and the reason.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("token")
	if v := r.Header.Get("Authorization"); v != "" {
		raw, _ = auth.ParseBearer(v)
	}
	if raw == "" {
		http.Error(w, "missing session token (Authorization: Bearer or ?token=)", http.StatusUnauthorized)
		return
	}
	if !h.serving.Load() {
		http.Error(w, "gateway is shutting down", http.StatusServiceUnavailable)
		return
	}
	h.sessions.Add(1)
	defer h.sessions.Done()
	claims, err := h.cfg.Tokens.VerifySession(raw)
	if err != nil {
		http.Error(w, "session token refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if !claims.Reusable {
		if _, err := h.cfg.Store.UseSessionToken(r.Context(), claims.ID, claims.ExpiresAt.Time, 1); err != nil {
			if errors.Is(err, store.ErrTokenUsed) {
				http.Error(w, "session token refused: already used (it is single-use)", http.StatusUnauthorized)
				return
			}
			h.log.Error("consume session token", "error", err)
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		h.log.Debug("websocket upgrade failed", "error", err)
		return // Accept answered the client
	}
	ws.SetReadLimit(wsReadLimit)
	// The connection is hijacked: the session goes on in a goroutine of its
	// own and this handler returns, ending the goroutine that served the
	// TLS handshake and the request, whose stack grew deep for them (about
	// 16 KiB an idle session would keep). The session ends with the client
	// or when a shutdown drain times out.
	ctx, cancel := context.WithCancel(h.ctx)
	req := broker.Request{Target: claims.Target, AgentID: claims.AgentID, Client: clientAddr(r)}
	// A reusable token opens many sessions: each gets its own id.
	if !claims.Reusable {
		if id, err := uuid.Parse(claims.ID); err == nil {
			req.ID = dataplane.SessionID(id)
		}
	}
	h.sessions.Add(1) // while this handler's count still holds the drain
	go func() {
		defer h.sessions.Done()
		defer cancel()
		h.cfg.Broker.Serve(ctx, req, clientStream{wsstream.New(ctx, ws)})
	}()
}

// clientStream adapts a WebSocket stream to broker.ClientStream.
type clientStream struct{ *wsstream.Stream }

// Fail closes the WebSocket with StatusConnectFailed and reason.
func (c clientStream) Fail(reason string) { c.CloseWithReason(wsstream.StatusConnectFailed, reason) }

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
