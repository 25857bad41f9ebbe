package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"sync"
	"time"
)

// session is one signed-in browser: the API key it signed in with (kept
// only in memory, to call the API on the user's behalf) and its CSRF token.
type session struct {
	// key is the API key secret; every call is made with it, so the API
	// checks it (revocation included) on every call.
	key string
	// csrf is the token every state-changing form of this session carries.
	csrf     string
	created  time.Time
	lastUsed time.Time
}

// sessionTable holds the signed-in sessions, keyed by the SHA-256 of the
// cookie value (so a lookup's timing tells nothing about the value). It is
// bounded: signing in when it is full drops the least recently used
// session. Safe for concurrent use.
type sessionTable struct {
	idle, maxAge time.Duration
	max          int
	rand         io.Reader

	mu sync.Mutex
	// byID maps the hash of a cookie value to its session.
	byID map[[sha256.Size]byte]*session
}

func newSessionTable(idle, maxAge time.Duration, max int, rand io.Reader) *sessionTable {
	return &sessionTable{idle: idle, maxAge: maxAge, max: max, rand: rand, byID: make(map[[sha256.Size]byte]*session)}
}

// randomToken returns 32 random bytes, base64url.
func randomToken(rand io.Reader) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand, b); err != nil {
		return "", fmt.Errorf("console: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// create starts a session for key and returns the cookie value.
func (t *sessionTable) create(key string, now time.Time) (string, *session, error) {
	id, err := randomToken(t.rand)
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomToken(t.rand)
	if err != nil {
		return "", nil, err
	}
	s := &session{key: key, csrf: csrf, created: now, lastUsed: now}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
	if len(t.byID) >= t.max {
		var oldest [sha256.Size]byte
		var found bool
		for h, o := range t.byID {
			if !found || o.lastUsed.Before(t.byID[oldest].lastUsed) {
				oldest, found = h, true
			}
		}
		delete(t.byID, oldest)
	}
	t.byID[sha256.Sum256([]byte(id))] = s
	return id, s, nil
}

// get returns the live session of a cookie value, or nil when there is
// none or it expired (idle or too old). touch marks it used: what a person
// does, not the polling of an open page, which would keep an unattended
// session alive.
func (t *sessionTable) get(id string, now time.Time, touch bool) *session {
	h := sha256.Sum256([]byte(id))
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byID[h]
	if s == nil {
		return nil
	}
	if t.expired(s, now) {
		delete(t.byID, h)
		return nil
	}
	if touch {
		s.lastUsed = now
	}
	c := *s
	return &c
}

// remove ends the session of a cookie value.
func (t *sessionTable) remove(id string) {
	h := sha256.Sum256([]byte(id))
	t.mu.Lock()
	delete(t.byID, h)
	t.mu.Unlock()
}

// removeKey ends every session signed in with key (once the API said the
// key is no longer valid).
func (t *sessionTable) removeKey(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for h, s := range t.byID {
		if subtle.ConstantTimeCompare([]byte(s.key), []byte(key)) == 1 {
			delete(t.byID, h)
		}
	}
}

func (t *sessionTable) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastUsed) > t.idle || now.Sub(s.created) > t.maxAge
}

// sweepLocked drops expired sessions.
func (t *sessionTable) sweepLocked(now time.Time) {
	for h, s := range t.byID {
		if t.expired(s, now) {
			delete(t.byID, h)
		}
	}
}

// len is the number of sessions, expired ones not yet swept included.
func (t *sessionTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// validCSRF reports whether got is the session's CSRF token, in constant time.
func (s *session) validCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}
