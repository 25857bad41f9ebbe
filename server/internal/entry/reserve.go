package entry

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/token"

	"sync"
)

// What a standing connection saves its sessions in store round trips:
// every session must find its token's minting key live and count one use
// of the token, but a connection that opens many sessions checks the key at
// most once per KeyRecheck and counts a reusable token's uses in
// reservations (reserve.go). A single-use token's one session counts its
// use alone, as on a WebSocket.
const (
	// KeyRecheck is how long a standing connection trusts its token's key
	// check: a key revoked while the connection is open stops the new
	// sessions on it within this long (at once on new connections).
	KeyRecheck = time.Second
	// maxReservation bounds one reservation of a reusable token's uses.
	maxReservation = 32
	// reservationShare bounds a reservation to this fraction of the
	// token's cap, so that uses reserved by one connection and not yet
	// used do not lock another out of a small cap: under 16 uses, every
	// session counts its own.
	reservationShare = 16
	// giveBackTimeout bounds the store call that gives back the unused
	// rest of a connection's reservation.
	giveBackTimeout = 5 * time.Second
)

// reservation is one standing connection's authorization state. The
// mutex serializes the streams that need the store; the others take a
// reserved use or the cached key check and go. The zero value is ready.
type reservation struct {
	mu        sync.Mutex
	left      int64     // uses counted in the store, not yet given to a session
	next      int64     // the size of the next reservation; 0 means 1
	keyLiveAt time.Time // when the key was last found live; zero: never
}

// authorize checks the token's key and counts one use for a new session:
// "" to go on, else the reason of the refusal.
func (r *reservation) authorize(ctx context.Context, h *Handler, c token.SessionClaims) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := h.cfg.Now()
	if r.keyLiveAt.IsZero() || now.Sub(r.keyLiveAt) >= KeyRecheck || now.Before(r.keyLiveAt) {
		if status, reason := h.checkKey(ctx, c.KeyID()); status != 0 {
			r.keyLiveAt = time.Time{}
			return reason
		}
		r.keyLiveAt = now
	}
	if r.left > 0 {
		r.left--
		return ""
	}
	if !c.Reusable {
		if status, reason := h.use(ctx, c); status != 0 {
			return reason
		}
		return ""
	}
	n := max(r.next, 1)
	n = min(n, maxReservation, max(h.maxUses(c)/reservationShare, 1))
	status, reason := h.useN(ctx, c, n)
	if status == 0 {
		r.left += n - 1
		r.next = min(2*n, maxReservation)
		return ""
	}
	if n > 1 {
		// Fewer than n left: count this session's use alone.
		r.next = 1
		if status, reason = h.use(ctx, c); status == 0 {
			return ""
		}
	}
	return reason
}

// giveBack returns the uses the connection reserved and did not use, when
// it has ended. A failure leaves them counted (the token opens fewer
// sessions than its cap, never more) and is logged.
func (r *reservation) giveBack(h *Handler, c token.SessionClaims, log hclog.Logger) {
	r.mu.Lock()
	n := r.left
	r.left = 0
	r.mu.Unlock()
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
	defer cancel()
	if err := h.cfg.Store.ReturnSessionTokenUses(ctx, c.ID, n); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("could not give back the session token's unused reserved uses; they stay counted", "uses", n, "error", err)
	}
}
