// Package entry is the gateway's client entry (DESIGN.md §9): GET /v1/connect
// with a session token, upgraded either to a WebSocket whose binary messages
// carry one session's bytes (client/wsstream), or to a standing connection
// that carries many sessions of the token, one per stream
// (client/muxstream, mux.go). It hands each session's stream to the session
// broker, and tracks every session it started so that a shutdown can drain
// them.
//
// Before it upgrades, it checks, in order: that the request is a WebSocket
// handshake it can accept (HTTP/1.1 GET with the upgrade headers), that the
// page behind it, if any, is from an allowed origin, the token (signature,
// expiry, kind), that the API key that minted the token is still live, and
// then counts the connection against the token's cap (one for a single-use
// token). Nothing that can refuse the upgrade comes after the count, so a
// refused request never uses up a token. Every refusal is logged at INFO
// with its reason, never with the token.
//
// A standing connection is authenticated once, before the upgrade, with the
// same checks but the count; then each of its streams is authorized on its
// own: the token must not have expired meanwhile, its key must still be
// live, and the session is counted against the token's cap (so a
// single-use token opens one stream, a reusable one up to its cap). Each
// session has its own id, audit row, maximum duration, slot under
// MaxSessions and idle timeout; the connection's keepalive stands for the
// sessions' own, and the loss of the connection ends them all (audit
// outcome client_gone).
package entry

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/clientip"
	"github.com/outposthq/outpost/server/internal/origin"
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

// TokenStore knows the API keys and counts the connections session tokens
// open; store.Store is one.
type TokenStore interface {
	GetAPIKey(ctx context.Context, id string) (store.APIKey, error)
	UseSessionToken(ctx context.Context, jti string, expiresAt time.Time, max int64) (int64, error)
	UseSessionTokenN(ctx context.Context, jti string, expiresAt time.Time, max, n int64) (int64, error)
	ReturnSessionTokenUses(ctx context.Context, jti string, n int64) error
}

// Config configures a Handler. Tokens, Store and Broker are required.
type Config struct {
	Tokens Verifier
	Store  TokenStore
	Broker *broker.Broker
	// ClientIP finds the client's address for the audit and logs; the zero
	// value trusts no proxy.
	ClientIP clientip.Resolver
	// Origins says which web pages may open the entry besides the
	// gateway's own. If nil, the gateway's own only.
	Origins *origin.Policy
	// MaxConnections caps the connections of a reusable token, whatever
	// the token allows. If zero, token.DefaultMaxConnections.
	MaxConnections uint32
	// MaxSessionDuration caps every session, whatever its token allows. If
	// zero, token.DefaultMaxSessionDuration.
	MaxSessionDuration time.Duration
	// MaxSessions caps the client sessions open at once through the entry;
	// one more is refused with 503 before its token is used. If zero,
	// DefaultMaxSessions.
	MaxSessions int
	// KeepAlive is how long a session may stay quiet before the entry
	// pings its client; a client that does not answer within another
	// KeepAlive is gone and its session ends. If zero, DefaultKeepAlive.
	KeepAlive time.Duration
	// IdleTimeout ends a session that carried no byte either way for this
	// long. If zero, DefaultIdleTimeout; negative: no idle timeout.
	IdleTimeout time.Duration
	// MaxStreamsPerConnection caps the sessions one standing connection
	// carries at once; one more is refused (the client learns the cap when
	// it connects). If zero, muxstream.DefaultMaxStreams.
	MaxStreamsPerConnection int
	// Now is the clock a standing connection checks its token's expiry
	// with, for each session. If nil, time.Now.
	Now func() time.Time
	// Logger may be nil.
	Logger hclog.Logger
}

// RevokedKeyMessage is the body of the 401 answered for a token whose API
// key was revoked (or is unknown to this gateway).
const RevokedKeyMessage = "the API key that created this token was revoked"

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
	// live holds the open sessions for the cap, keepalive and idle timeout.
	live      *live
	watchOnce sync.Once
	// drain ends when the handler stops serving: standing connections
	// take no more streams, and close once their sessions ended.
	drain     context.Context
	stopDrain context.CancelFunc
}

// New checks cfg and returns a Handler that is not yet serving.
func New(cfg Config) (*Handler, error) {
	if cfg.Tokens == nil || cfg.Store == nil || cfg.Broker == nil {
		return nil, errors.New("entry: Tokens, Store and Broker are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = token.DefaultMaxConnections
	}
	if cfg.MaxSessionDuration == 0 {
		cfg.MaxSessionDuration = token.DefaultMaxSessionDuration
	}
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	cfg.KeepAlive = cmp.Or(cfg.KeepAlive, DefaultKeepAlive)
	cfg.MaxStreamsPerConnection = cmp.Or(cfg.MaxStreamsPerConnection, muxstream.DefaultMaxStreams)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	idle := cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	if idle < 0 {
		idle = 0
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, live: newLive(cfg.MaxSessions, cfg.KeepAlive, idle)}
	h.ctx, h.cancel = context.WithCancelCause(context.Background())
	h.drain, h.stopDrain = context.WithCancel(context.Background())
	return h, nil
}

// Start lets the handler accept sessions, and starts the watcher of their
// keepalives and idle timeouts (stopped by Shutdown or Close).
func (h *Handler) Start() {
	h.watchOnce.Do(func() { go h.live.watch() })
	h.serving.Store(true)
}

// stopWatch stops the session watcher, if it was started.
func (h *Handler) stopWatch() {
	started := true
	h.watchOnce.Do(func() { started = false })
	if started {
		h.live.close()
	}
}

// Stop refuses new sessions (503) and tells standing connections to take no
// more; live sessions go on. A stopped handler does not start again.
func (h *Handler) Stop() {
	h.serving.Store(false)
	h.stopDrain()
}

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
	defer h.stopWatch()
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
func (h *Handler) Close() {
	h.Stop()
	h.cancel(errors.New("entry: closed"))
	h.stopWatch()
}

// ServeHTTP handles GET /v1/connect. Refusals answer before the upgrade:
// 400, 405 or 426 for a request that is no WebSocket handshake, 403 for an
// origin not allowed, 401 for a token refused (bad, expired, its key
// revoked, used up), 503 when the store fails or the gateway stops. Routing
// and connection failures close the WebSocket with
// wsstream.StatusConnectFailed and the reason. A request with "Upgrade:
// outpost-mux/1" asks for a standing connection instead (serveMux): the
// same refusals, but a session's own (its token used up, say) reset its
// stream with muxstream.ResetFailed and the reason.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.log.With("client", r.RemoteAddr)
	raw := r.URL.Query().Get("token")
	if v := r.Header.Get("Authorization"); v != "" {
		raw, _ = auth.ParseBearer(v)
	}
	if raw == "" {
		refuse(w, log, http.StatusUnauthorized, "missing session token (Authorization: Bearer or ?token=)")
		return
	}
	if !h.serving.Load() {
		http.Error(w, "gateway is shutting down", http.StatusServiceUnavailable)
		return
	}
	h.sessions.Add(1)
	defer h.sessions.Done()
	if isMuxUpgrade(r) {
		h.serveMux(w, r, log, raw)
		return
	}
	if status, reason := upgradeProblem(w.Header(), r); status != 0 {
		refuse(w, log, status, reason+"; the session token was not used")
		return
	}
	claims, log, ok := h.authenticate(w, r, log, raw, "session_id")
	if !ok {
		return
	}
	if status, reason := h.use(r.Context(), claims); status != 0 {
		refuse(w, log, status, reason)
		return
	}
	// The origin was checked above, against the configured policy.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		log.Warn("websocket upgrade failed after the token's use was counted", "error", err)
		return // Accept answered the client
	}
	ws.SetReadLimit(wsReadLimit)
	// The connection is hijacked: the session goes on in a goroutine of its
	// own and this handler returns, ending the goroutine that served the
	// TLS handshake and the request, whose stack grew deep for them (about
	// 16 KiB an idle session would keep). The session ends with the client
	// or when a shutdown drain times out.
	// The stream's context ends only with the entry (a shutdown that timed
	// out): a coder/websocket read whose context ends drops the connection
	// at once. The session's own context, cancelled with a broker.Limit as
	// the cause by the idle and keepalive watcher, lets the broker close
	// the stream with the limit's reason first.
	streamCtx, stopStream := context.WithCancel(h.ctx)
	ctx, cancel := context.WithCancelCause(streamCtx)
	sess := &session{clientStream: wsClient{wsstream.New(streamCtx, ws)}, ping: ws.Ping, cancel: cancel}
	if !h.live.add(sess) {
		// Lost the race for the last slot after the token was counted.
		sess.Fail(fmt.Sprintf("the gateway holds its maximum of %d client sessions; try again later", h.cfg.MaxSessions))
		cancel(nil)
		stopStream()
		return
	}
	req := broker.Request{
		Target: claims.Target, AgentID: claims.AgentID,
		Client: h.clientAddr(r), KeyID: claims.KeyID(), MaxDuration: h.maxDuration(claims),
	}
	// A reusable token opens many sessions: each gets its own id.
	if !claims.Reusable {
		if id, err := uuid.Parse(claims.ID); err == nil {
			req.ID = dataplane.SessionID(id)
		}
	}
	h.sessions.Add(1) // while this handler's count still holds the drain
	go func() {
		defer h.sessions.Done()
		defer stopStream()
		defer cancel(nil)
		defer h.live.remove(sess)
		h.cfg.Broker.Serve(ctx, req, sess)
	}()
}

// authenticate makes the checks a WebSocket and a standing connection share
// before the upgrade: the page's origin, the session cap, the token, its
// API key. It answers a refusal itself and returns false; otherwise it
// returns the token's claims and log with the token's id (as idKey) and
// key id.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, log hclog.Logger, raw, idKey string) (token.SessionClaims, hclog.Logger, bool) {
	if err := h.cfg.Origins.Check(r.Header.Get("Origin"), "https://"+r.Host); err != nil {
		refuse(w, log, http.StatusForbidden, err.Error()+"; the session token was not used")
		return token.SessionClaims{}, log, false
	}
	if h.live.full() {
		refuse(w, log, http.StatusServiceUnavailable, fmt.Sprintf("the gateway holds its maximum of %d client sessions; try again later (the session token was not used)", h.cfg.MaxSessions))
		return token.SessionClaims{}, log, false
	}
	claims, err := h.cfg.Tokens.VerifySession(raw)
	if err != nil {
		refuse(w, log, http.StatusUnauthorized, "session token refused: "+err.Error())
		return claims, log, false
	}
	log = log.With(idKey, claims.ID, "key_id", claims.KeyID())
	if status, reason := h.checkKey(r.Context(), claims.KeyID()); status != 0 {
		refuse(w, log, status, reason)
		return claims, log, false
	}
	return claims, log, true
}

// refuse answers a request the entry will not serve, and logs why.
func refuse(w http.ResponseWriter, log hclog.Logger, status int, reason string) {
	log.Info("session refused", "status", status, "reason", reason)
	http.Error(w, reason, status)
}

// checkKey refuses (401) a token whose API key is revoked or unknown, and
// answers 503 when the store cannot tell.
func (h *Handler) checkKey(ctx context.Context, keyID string) (int, string) {
	k, err := h.cfg.Store.GetAPIKey(ctx, keyID)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && k.RevokedAt != nil:
		return http.StatusUnauthorized, RevokedKeyMessage
	case err != nil:
		h.log.Error("look up the API key of a session token", "key_id", keyID, "error", err)
		return http.StatusServiceUnavailable, "store unavailable"
	}
	return 0, ""
}

// use counts one connection of the token against its cap (maxUses).
func (h *Handler) use(ctx context.Context, c token.SessionClaims) (int, string) {
	return h.useN(ctx, c, 1)
}

// maxUses is how many connections the token may open: 1 for a single-use
// token; for a reusable one, the token's cap within the gateway's.
func (h *Handler) maxUses(c token.SessionClaims) int64 {
	max := int64(1)
	if c.Reusable {
		max = int64(h.cfg.MaxConnections)
		if c.MaxConnections > 0 {
			max = min(max, int64(c.MaxConnections))
		}
	}
	return max
}

// useN counts n connections of the token at once, all or none (see use).
func (h *Handler) useN(ctx context.Context, c token.SessionClaims, n int64) (int, string) {
	max := h.maxUses(c)
	_, err := h.cfg.Store.UseSessionTokenN(ctx, c.ID, c.ExpiresAt.Time, max, n)
	switch {
	case errors.Is(err, store.ErrTokenUsed) && !c.Reusable:
		return http.StatusUnauthorized, "session token refused: already used (it is single-use)"
	case errors.Is(err, store.ErrTokenUsed):
		return http.StatusUnauthorized, fmt.Sprintf("session token refused: its connection limit (%d) is reached", max)
	case err != nil:
		h.log.Error("count a session token's use", "session_id", c.ID, "error", err)
		return http.StatusServiceUnavailable, "store unavailable"
	}
	return 0, ""
}

// maxDuration is how long a session of the token may last: the token's cap
// within the gateway's (which applies when the token names none).
func (h *Handler) maxDuration(c token.SessionClaims) time.Duration {
	if d := c.MaxDuration(); d > 0 {
		return min(d, h.cfg.MaxSessionDuration)
	}
	return h.cfg.MaxSessionDuration
}

// upgradeProblem returns why r is not a WebSocket handshake the entry can
// accept, with the status to answer (and the headers that go with it, set
// on hdr), or 0. It checks what websocket.Accept checks, so that after it
// the upgrade cannot fail on the request.
func upgradeProblem(hdr http.Header, r *http.Request) (int, string) {
	if status, reason := upgradeRequestProblem(hdr, r, "the WebSocket entry", " (curl: --http1.1)"); status != 0 {
		return status, reason
	}
	switch {
	case !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket"):
		hdr.Set("Connection", "Upgrade")
		hdr.Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, "the WebSocket entry needs a WebSocket handshake (Connection: Upgrade, Upgrade: websocket)"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		hdr.Set("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, fmt.Sprintf("unsupported WebSocket version %q (only 13 is supported)", r.Header.Get("Sec-WebSocket-Version"))
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake has exactly one Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// upgradeRequestProblem checks what every upgrade of the entry needs: an
// HTTP/1.1 GET (HTTP/2 has no Upgrade, RFC 9113 §8.6: say so rather than
// answer 426 with headers HTTP/2 forbids). what names the upgrade in the
// reason; hint follows the HTTP/1.1 reason.
func upgradeRequestProblem(hdr http.Header, r *http.Request, what, hint string) (int, string) {
	switch {
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return http.StatusBadRequest, fmt.Sprintf("%s needs HTTP/1.1, this request came over %s%s", what, r.Proto, hint)
	case r.Method != http.MethodGet:
		hdr.Set("Allow", http.MethodGet)
		return http.StatusMethodNotAllowed, fmt.Sprintf("%s needs a GET, not %s", what, r.Method)
	}
	return 0, ""
}

// hasToken reports whether a comma-separated list header holds token,
// compared case-insensitively.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// clientAddr is the client's address for the audit and logs: the TCP peer
// ("host:port"), or the address a trusted proxy forwarded for.
func (h *Handler) clientAddr(r *http.Request) string {
	a := h.cfg.ClientIP.FromRequest(r)
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && ap.Addr().Unmap() == a {
		return r.RemoteAddr
	}
	if !a.IsValid() {
		return r.RemoteAddr
	}
	return a.String()
}
