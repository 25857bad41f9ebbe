// Package auth authenticates and authorizes management API calls: bearer API keys
// (random, stored only as a SHA-256 hash, carrying scopes) checked by one gRPC
// interceptor pair. The REST gateway reaches the services through the same gRPC
// server, so the same check applies to gRPC and REST alike.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Scopes carried by API keys (DESIGN.md §6). ScopeAll grants every scope.
const (
	ScopeAll            = "*"
	ScopeEnrollCreate   = "enroll.create"
	ScopeAgentsRead     = "agents.read"
	ScopeAgentsWrite    = "agents.write"
	ScopeRoutesRead     = "routes.read"
	ScopeSessionsCreate = "sessions.create"
	// ScopeSessionsRead lets a key read the session audit (targets, client
	// addresses, key ids): more than agents.read shows.
	ScopeSessionsRead = "sessions.read"
	// ScopeMetricsRead lets a key scrape /metrics on the API port.
	ScopeMetricsRead = "metrics.read"
)

// KnownScopes lists every scope a key may carry, ScopeAll included.
var KnownScopes = []string{ScopeAll, ScopeEnrollCreate, ScopeAgentsRead, ScopeAgentsWrite, ScopeRoutesRead, ScopeSessionsCreate, ScopeSessionsRead, ScopeMetricsRead}

// Public marks a method that needs no API key (health, reflection, and Enroll,
// whose bearer is an enrollment token checked by the service itself).
const Public = ""

// KeyPrefix starts every API key, so a leaked key is recognisable in logs and scanners.
const KeyPrefix = "opk_"

// keyBytes is the number of random bytes in a key: 256 bits.
const keyBytes = 32

// ErrUnknownKey is returned by a Lookup for a key hash it does not know.
var ErrUnknownKey = errors.New("auth: unknown api key")

// Key is what a Lookup knows about a stored API key.
type Key struct {
	ID      string
	Scopes  []string
	Revoked bool
}

// Allows reports whether the key carries scope (or ScopeAll).
func (k Key) Allows(scope string) bool {
	return slices.Contains(k.Scopes, ScopeAll) || slices.Contains(k.Scopes, scope)
}

// Lookup finds a key by the SHA-256 hash of its secret. It returns ErrUnknownKey
// (possibly wrapped) when there is none; any other error is an internal failure.
type Lookup func(ctx context.Context, hash []byte) (Key, error)

// NewKey returns a new random API key secret and its hash, reading entropy from rand.
func NewKey(rand io.Reader) (secret string, hash []byte, err error) {
	b := make([]byte, keyBytes)
	if _, err := io.ReadFull(rand, b); err != nil {
		return "", nil, fmt.Errorf("auth: generate key: %w", err)
	}
	secret = KeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, HashKey(secret), nil
}

// HashKey returns the SHA-256 of an API key secret, the only form that is stored.
func HashKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// ValidateScopes checks that every scope is known and that there is at least one.
func ValidateScopes(scopes []string) error {
	if len(scopes) == 0 {
		return errors.New("auth: at least one scope is required")
	}
	for _, s := range scopes {
		if !slices.Contains(KnownScopes, s) {
			return fmt.Errorf("auth: unknown scope %q (known: %s)", s, strings.Join(KnownScopes, ", "))
		}
	}
	return nil
}

// Authorizer checks the bearer key of each gRPC call against the scope its method
// needs. It is safe for concurrent use once built.
type Authorizer struct {
	lookup Lookup
	// policy maps a full gRPC method name ("/pkg.Service/Method") to the scope it
	// needs, or Public. Methods absent from it need ScopeAll.
	policy map[string]string
	// publicServices are service-name prefixes ("/grpc.health.v1.Health/") open to all.
	publicServices []string
}

// NewAuthorizer returns an Authorizer using lookup for keys and policy for scopes.
// Methods not in policy require ScopeAll; services whose full method names start
// with one of publicPrefixes need no key.
func NewAuthorizer(lookup Lookup, policy map[string]string, publicPrefixes ...string) (*Authorizer, error) {
	if lookup == nil {
		return nil, errors.New("auth: nil key lookup")
	}
	return &Authorizer{lookup: lookup, policy: maps.Clone(policy), publicServices: publicPrefixes}, nil
}

type keyCtxKey struct{}

// KeyFromContext returns the API key that authorized the call, if any.
func KeyFromContext(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(keyCtxKey{}).(Key)
	return k, ok
}

// BearerFromContext returns the bearer token of the incoming call's authorization
// metadata, or "" when there is none.
func BearerFromContext(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := ParseBearer(v); ok {
			return tok
		}
	}
	return ""
}

// ParseBearer returns the token of an HTTP Authorization header value
// "Bearer <token>"; the scheme is matched case-insensitively (RFC 9110
// §11.1) and surrounding spaces are ignored. ok is false for another scheme
// or an empty token. It is the one parser of bearer credentials: the gRPC
// API and the client entry both use it.
func ParseBearer(header string) (token string, ok bool) {
	scheme, tok, found := strings.Cut(strings.TrimSpace(header), " ")
	tok = strings.TrimSpace(tok)
	if !found || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// Authorize checks the call to fullMethod and returns a context carrying the key.
// Errors are gRPC statuses: Unauthenticated for a missing, unknown or revoked key,
// PermissionDenied naming the scope needed, Unavailable when the store cannot
// be reached, Internal when the lookup fails otherwise.
func (a *Authorizer) Authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	scope, listed := a.policy[fullMethod]
	if !listed {
		scope = ScopeAll
		for _, p := range a.publicServices {
			if strings.HasPrefix(fullMethod, p) {
				scope = Public
			}
		}
	}
	if scope == Public {
		return ctx, nil
	}
	key, err := a.check(ctx, BearerFromContext(ctx), scope, fullMethod)
	if err != nil {
		return nil, err
	}
	return context.WithValue(ctx, keyCtxKey{}, key), nil
}

// check authenticates bearer and requires scope for what (a method or a
// path, for the message). Errors are gRPC statuses (see Authorize).
func (a *Authorizer) check(ctx context.Context, bearer, scope, what string) (Key, error) {
	if bearer == "" {
		return Key{}, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "missing api key: send 'authorization: Bearer <key>'")
	}
	key, err := a.lookup(ctx, HashKey(bearer))
	switch {
	case errors.Is(err, ErrUnknownKey):
		return Key{}, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "unknown api key")
	case err != nil:
		// Unavailable when the store cannot be reached: never a "no".
		return Key{}, grpcerr.From(fmt.Errorf("api key lookup failed: %w", err))
	case key.Revoked:
		return Key{}, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "api key revoked")
	case !key.Allows(scope):
		return Key{}, grpcerr.Errorf(grpcerr.ErrPermission, "api key %s lacks scope %q needed for %s", key.ID, scope, what)
	}
	return key, nil
}

// RequireHTTP wraps an HTTP handler that is not part of the gRPC API (such as
// /metrics) with the same key check: a bearer API key carrying scope. It
// answers 401 for a missing, unknown or revoked key, 403 for a key without the
// scope, 503 when the lookup fails, each with a plain-text reason.
func (a *Authorizer) RequireHTTP(scope string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer, _ := ParseBearer(r.Header.Get("Authorization"))
		if _, err := a.check(r.Context(), bearer, scope, r.URL.Path); err != nil {
			code := http.StatusServiceUnavailable
			switch status.Code(err) {
			case codes.Unauthenticated:
				code = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
			case codes.PermissionDenied:
				code = http.StatusForbidden
			}
			http.Error(w, status.Convert(err).Message(), code)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// UnaryInterceptor authorizes unary calls.
func (a *Authorizer) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.Authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// StreamInterceptor authorizes streaming calls.
func (a *Authorizer) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.Authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }
