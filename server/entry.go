package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// Client entry (DESIGN.md §9): GET /v1/connect upgraded to WebSocket; binary
// messages carry the byte stream.
const (
	connectPath = "/v1/connect"
	// wsReadLimit is the largest WebSocket message the entry accepts.
	wsReadLimit = 1 << 20
)

// serveConnect handles the WebSocket entry. Token problems answer 401 before
// the upgrade; routing and connection failures close the WebSocket with
// wsstream.StatusConnectFailed and the reason.
func (g *Gateway) serveConnect(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); h != "" {
		raw, _ = strings.CutPrefix(h, "Bearer ")
	}
	if raw == "" {
		http.Error(w, "missing session token (Authorization: Bearer or ?token=)", http.StatusUnauthorized)
		return
	}
	if !g.serving.Load() {
		http.Error(w, "gateway is shutting down", http.StatusServiceUnavailable)
		return
	}
	g.sessions.Add(1)
	defer g.sessions.Done()
	claims, err := g.tokens.VerifySession(raw)
	if err != nil {
		http.Error(w, "session token refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if !claims.Reusable {
		if err := g.store.ConsumeSessionToken(r.Context(), claims.ID, claims.ExpiresAt.Time); err != nil {
			if errors.Is(err, store.ErrTokenUsed) {
				http.Error(w, "session token refused: already used (it is single-use)", http.StatusUnauthorized)
				return
			}
			g.log.Error("consume session token", "error", err)
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		g.log.Debug("websocket upgrade failed", "error", err)
		return // Accept answered the client
	}
	ws.SetReadLimit(wsReadLimit)
	// The connection is hijacked: the session goes on in a goroutine of its
	// own and this handler returns, ending the goroutine that served the
	// TLS handshake and the request, whose stack grew deep for them (about
	// 16 KiB an idle session would keep). The session ends with the client
	// or when a shutdown drain times out (sessionCtx).
	ctx, cancel := context.WithCancel(g.sessionCtx)
	client := clientAddr(r)
	g.sessions.Add(1) // while this handler's count still holds the drain
	go func() {
		defer g.sessions.Done()
		defer cancel()
		g.runSession(ctx, wsstream.New(ctx, ws), claims, client)
	}()
}

// runSession routes and connects one client session, relays it and records it.
func (g *Gateway) runSession(ctx context.Context, stream *wsstream.Stream, claims token.SessionClaims, client string) {
	// A reusable token opens many sessions: each gets its own id.
	sid := dataplane.SessionID(uuid.New())
	if !claims.Reusable {
		if id, err := uuid.Parse(claims.ID); err == nil {
			sid = dataplane.SessionID(id)
		}
	}
	log := g.log.With("session_id", sid.String(), "target", claims.Target, "client", client)
	start := time.Now()
	rec := store.SessionRecord{ID: sid.String(), Target: claims.Target, StartedAt: start}
	d, err := g.decide(claims.Target, claims.AgentID)
	if err == nil {
		rec.Decision = d.kind.String() + ": " + d.reason
	}
	g.metrics.SessionsActive.Inc()
	defer g.metrics.SessionsActive.Dec()
	var conn connected
	if err == nil {
		conn, err = g.connectTarget(ctx, d, sid)
	}
	rec.AgentID = conn.agentID
	// The audit row is written (a synchronous SQLite commit) while the
	// first bytes already flow; both paths below wait for it before the
	// final update.
	inserted := make(chan struct{})
	go func() {
		defer close(inserted)
		if ierr := g.store.InsertSession(context.WithoutCancel(ctx), rec); ierr != nil {
			log.Warn("session audit insert failed", "error", ierr)
		}
	}()
	if err != nil {
		g.metrics.SessionsTotal.WithLabelValues("connect_failed").Inc()
		log.Info("session failed", "reason", err)
		<-inserted
		g.finishSession(ctx, sid, 0, 0, "connect_failed", err.Error(), log)
		stream.CloseWithReason(wsstream.StatusConnectFailed, err.Error())
		return
	}
	g.metrics.SessionSetup.Observe(time.Since(start).Seconds())
	log.Info("session open", "via", via(conn), "setup", time.Since(start).Round(time.Microsecond))

	stats, rerr := relay.Relay(ctx, stream, conn.endpoint, relay.Options{})
	g.metrics.Bytes.WithLabelValues("up").Add(float64(stats.AToB))
	g.metrics.Bytes.WithLabelValues("down").Add(float64(stats.BToA))
	outcome, reason := "ok", ""
	if rerr != nil {
		outcome, reason = "error", rerr.Error()
	}
	g.metrics.SessionsTotal.WithLabelValues(outcome).Inc()
	log.Info("session closed", "outcome", outcome, "bytes_up", stats.AToB, "bytes_down", stats.BToA,
		"duration", time.Since(start).Round(time.Millisecond), "reason", reason)
	<-inserted
	g.finishSession(ctx, sid, stats.AToB, stats.BToA, outcome, reason, log)
}

func (g *Gateway) finishSession(ctx context.Context, sid dataplane.SessionID, up, down int64, outcome, reason string, log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := g.store.FinishSession(ctx, sid.String(), time.Time{}, up, down, outcome, reason); err != nil {
		log.Warn("session audit update failed", "error", err)
	}
}

func via(c connected) string {
	if c.agentID == "" {
		return "direct"
	}
	return "agent " + c.agent
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
