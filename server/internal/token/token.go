// Package token mints and verifies the gateway's JWTs (ES256): enrollment tokens
// (DESIGN.md §5), which let one agent enroll once — tokens signed by a
// configured external provisioner key are accepted on the same terms when
// their audience names this gateway — and session tokens (DESIGN.md §9),
// which let a client open a session to one target.
package token

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Claim values and header content types.
const (
	ScopeEnroll       = "enroll"
	ContentEnrollment = "ENROLLMENT"
	// DefaultEnrollmentLeeway is the clock skew a gateway tolerates on an
	// enrollment token's exp and nbf unless configured otherwise
	// (EnrollmentRules.Leeway).
	DefaultEnrollmentLeeway = 60 * time.Second
	// MaxEnrollmentLeeway bounds EnrollmentRules.Leeway.
	MaxEnrollmentLeeway = 5 * time.Minute
	// DefaultEnrollmentTTL is an enrollment token's lifetime when none is asked for.
	DefaultEnrollmentTTL = time.Hour
	// MaxEnrollmentTTL bounds the lifetime an operator may ask for.
	MaxEnrollmentTTL = 30 * 24 * time.Hour

	ScopeSession   = "session"
	ContentSession = "SESSION"
	// DefaultSessionTTL is a session token's lifetime when none is asked for.
	DefaultSessionTTL = 60 * time.Second
	// MaxSessionTTL is the default cap on a session token's lifetime (the
	// gateway's max_session_ttl).
	MaxSessionTTL = 24 * time.Hour
	// SessionTTLLimit is the largest max_session_ttl a gateway accepts.
	SessionTTLLimit = 7 * 24 * time.Hour
	// DefaultMaxConnections is the default cap on the connections one
	// reusable session token opens, and the most it may ask for (the
	// gateway's max_token_connections).
	DefaultMaxConnections = 1000
	// DefaultMaxSessionDuration is the default cap on how long one session
	// lasts, and the most a token may ask for (the gateway's
	// max_session_duration).
	DefaultMaxSessionDuration = 8 * time.Hour
	// SessionDurationLimit is the largest max_session_duration a gateway
	// accepts.
	SessionDurationLimit = 7 * 24 * time.Hour
)

// SessionClaims are the claims of a session token.
//
// The registered claim "sub" (RegisteredClaims.Subject) is the ID of the
// API key that minted the token: the principal the token acts for. The
// client entry refuses the token once that key is revoked, and the audit
// records it. Every session token carries one.
type SessionClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope"`
	// Target is the destination, "host:port".
	Target string `json:"dst"`
	// AgentID, if set, is the only agent that may carry the session.
	AgentID string `json:"agent_id,omitempty"`
	// Reusable tokens may open several connections until they expire, up to
	// MaxConnections; the others open one.
	Reusable bool `json:"reusable,omitempty"`
	// MaxConnections caps the connections a reusable token opens ("max_conn").
	// Zero: the gateway's maximum when the client connects. Single-use
	// tokens ignore it.
	MaxConnections uint32 `json:"max_conn,omitempty"`
	// MaxDurationMS caps how long each session opened with the token lasts,
	// in milliseconds ("max_dur_ms"). Zero: the gateway's maximum when the
	// client connects. See MaxDuration.
	MaxDurationMS int64 `json:"max_dur_ms,omitempty"`
}

// KeyID returns the ID of the API key that minted the token ("sub").
func (c SessionClaims) KeyID() string { return c.Subject }

// MaxDuration returns MaxDurationMS as a duration (zero: not set).
func (c SessionClaims) MaxDuration() time.Duration {
	return time.Duration(c.MaxDurationMS) * time.Millisecond
}

// NewSession fills the registered claims of c (jti, iat, nbf, exp from ttl,
// scope) and returns the signed token with its claims. c.Subject (the
// minting API key's ID) and c.Target are required.
func (i *Issuer) NewSession(c SessionClaims, ttl time.Duration) (string, SessionClaims, error) {
	if c.Subject == "" {
		return "", c, errors.New("token: a session token needs the ID of the API key minting it (sub)")
	}
	c.Scope = ScopeSession
	s, err := i.sign(&c.RegisteredClaims, &c, ContentSession, cmp.Or(ttl, DefaultSessionTTL))
	return s, c, err
}

// VerifySession checks a session token: ES256 signature by the gateway's own
// key (never a provisioner's), exp/nbf with no leeway (the gateway checks its
// own clock), cty SESSION, scope session, a UUID jti, a target, the minting
// API key's ID (sub) and no negative duration cap. Whether that key is still
// live is the caller's check. Errors wrap one of the package's sentinels.
func (i *Issuer) VerifySession(s string) (SessionClaims, error) {
	var c SessionClaims
	tok, err := jwt.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return &i.key.PublicKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithTimeFunc(i.now),
		jwt.WithExpirationRequired(),
	)
	if err := classify(err, c.ExpiresAt, c.NotBefore); err != nil {
		return c, err
	}
	if err := checkKind(tok, ContentSession, c.Scope, ScopeSession, c.ID); err != nil {
		return c, err
	}
	if c.Target == "" {
		return c, fmt.Errorf("%w: no dst claim", ErrMalformed)
	}
	if c.Subject == "" {
		return c, fmt.Errorf("%w: no sub claim: the token names no API key", ErrMalformed)
	}
	if c.MaxDurationMS < 0 {
		return c, fmt.Errorf("%w: negative max_dur_ms claim", ErrMalformed)
	}
	return c, nil
}

// classify maps a jwt parse error to the package's errors.
func classify(err error, exp, nbf *jwt.NumericDate) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w (expired at %s)", ErrExpired, exp.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w (valid from %s)", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return ErrSignature
	default:
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
}

// checkKind checks a parsed token's content type, scope and jti.
func checkKind(tok *jwt.Token, wantCty, scope, wantScope, jti string) error {
	if cty, _ := tok.Header["cty"].(string); cty != wantCty {
		return fmt.Errorf("%w: content type %q, want %q", ErrWrongKind, cty, wantCty)
	}
	if scope != wantScope {
		return fmt.Errorf("%w: scope %q, want %q", ErrWrongKind, scope, wantScope)
	}
	if _, err := uuid.Parse(jti); err != nil {
		return fmt.Errorf("%w: jti %q is not a UUID", ErrMalformed, jti)
	}
	return nil
}

// Errors returned by Verify, for the caller to map to status codes.
var (
	ErrMalformed   = errors.New("token: malformed")
	ErrSignature   = errors.New("token: signature not valid for any trusted key")
	ErrExpired     = errors.New("token: expired")
	ErrNotYetValid = errors.New("token: not valid yet")
	ErrWrongKind   = errors.New("token: wrong kind of token")
	ErrAudience    = errors.New("token: audience not accepted")
)

// Routes are the subnets and domains pre-approved for the agent a token enrolls.
type Routes struct {
	Subnets []string `json:"subnets,omitempty"`
	Domains []string `json:"domains,omitempty"`
}

// EnrollmentClaims are the claims of an enrollment token.
type EnrollmentClaims struct {
	jwt.RegisteredClaims
	Scope        string  `json:"scope"`
	GatewayURL   string  `json:"gw_url"`
	QUICEndpoint string  `json:"quic_endpoint"`
	CASPKISHA256 string  `json:"ca_spki_sha256"`
	AgentName    string  `json:"agent_name,omitempty"`
	Routes       *Routes `json:"routes,omitempty"`
}

// Issuer signs tokens with the gateway's key and verifies tokens signed by it or
// by a provisioner key. It is safe for concurrent use.
type Issuer struct {
	key         *ecdsa.PrivateKey
	provisioner []*ecdsa.PublicKey
	now         func() time.Time
}

// NewIssuer returns an Issuer signing with key (P-256). provisioners are extra
// public keys whose tokens are accepted; now is the clock (nil: time.Now).
func NewIssuer(key *ecdsa.PrivateKey, provisioners []*ecdsa.PublicKey, now func() time.Time) (*Issuer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("token: signing key must be ECDSA P-256")
	}
	for _, p := range provisioners {
		if p == nil || p.Curve != elliptic.P256() {
			return nil, errors.New("token: provisioner keys must be ECDSA P-256")
		}
	}
	if now == nil {
		now = time.Now
	}
	return &Issuer{key: key, provisioner: provisioners, now: now}, nil
}

// NewEnrollment fills the registered claims of c (jti, iat, nbf, exp from ttl,
// scope) and returns the signed token with its claims. c's aud is kept as
// given: the gateway puts its own audience there (EnrollmentRules.Audience).
func (i *Issuer) NewEnrollment(c EnrollmentClaims, ttl time.Duration) (string, EnrollmentClaims, error) {
	c.Scope = ScopeEnroll
	s, err := i.sign(&c.RegisteredClaims, &c, ContentEnrollment, cmp.Or(ttl, DefaultEnrollmentTTL))
	return s, c, err
}

// sign fills reg (jti, iat, nbf, exp) and signs claims, which embeds reg,
// with content type cty.
func (i *Issuer) sign(reg *jwt.RegisteredClaims, claims jwt.Claims, cty string, ttl time.Duration) (string, error) {
	now := i.now().Truncate(time.Second)
	reg.ID = uuid.NewString()
	reg.IssuedAt = jwt.NewNumericDate(now)
	reg.NotBefore = jwt.NewNumericDate(now)
	reg.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["cty"] = cty
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	return s, nil
}

// EnrollmentRules are what VerifyEnrollment holds an enrollment token to,
// besides its signature and kind. The zero value tolerates no clock skew,
// checks no audience on the gateway's own tokens and refuses every
// provisioner token.
type EnrollmentRules struct {
	// Audience is the gateway's own audience, its public URL, which the
	// tokens it mints carry in aud. A token signed by the gateway's key
	// that carries aud must name it; one without aud (minted before
	// tokens carried one) is accepted. Empty: aud is not checked.
	Audience string
	// ProvisionerAudience is the audience a token signed by a provisioner
	// key must name in aud, so that a provisioner's token for another
	// gateway is refused here. Empty: provisioner tokens are refused.
	ProvisionerAudience string
	// Leeway is the clock skew tolerated on exp and nbf: a token is
	// accepted until Leeway after it expired. Zero (or negative) means
	// none; the gateway's default is DefaultEnrollmentLeeway.
	Leeway time.Duration
}

// VerifyEnrollment checks an enrollment token: ES256 signature by the
// gateway or a provisioner key, exp/nbf within r.Leeway, cty ENROLLMENT,
// scope enroll, a UUID jti, and the audience r asks for the key that signed
// it. Errors wrap one of the package's sentinels: ErrAudience when the
// audience is missing or wrong.
func (i *Issuer) VerifyEnrollment(s string, r EnrollmentRules) (EnrollmentClaims, error) {
	c, tok, err := i.parseEnrollment(s, &i.key.PublicKey, r.Leeway)
	provisioned := false
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) && len(i.provisioner) > 0 {
		keys := jwt.VerificationKeySet{}
		for _, p := range i.provisioner {
			keys.Keys = append(keys.Keys, p)
		}
		c, tok, err = i.parseEnrollment(s, keys, r.Leeway)
		provisioned = true
	}
	if err := classify(err, c.ExpiresAt, c.NotBefore); err != nil {
		return c, err
	}
	if err := checkKind(tok, ContentEnrollment, c.Scope, ScopeEnroll, c.ID); err != nil {
		return c, err
	}
	switch {
	case provisioned && r.ProvisionerAudience == "":
		return c, fmt.Errorf("%w: a provisioner token, and this gateway has no provisioner audience configured", ErrAudience)
	case provisioned && !slices.Contains(c.Audience, r.ProvisionerAudience):
		return c, fmt.Errorf("%w: provisioner token's aud %q does not name %q, this gateway's provisioner audience", ErrAudience, []string(c.Audience), r.ProvisionerAudience)
	case !provisioned && r.Audience != "" && len(c.Audience) > 0 && !slices.Contains(c.Audience, r.Audience):
		return c, fmt.Errorf("%w: aud %q does not name this gateway (%q)", ErrAudience, []string(c.Audience), r.Audience)
	}
	return c, nil
}

// parseEnrollment parses s into enrollment claims, verifying its signature
// with key (a public key or a jwt.VerificationKeySet) and its lifetime with
// leeway.
func (i *Issuer) parseEnrollment(s string, key any, leeway time.Duration) (EnrollmentClaims, *jwt.Token, error) {
	var c EnrollmentClaims
	tok, err := jwt.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithLeeway(max(leeway, 0)),
		jwt.WithTimeFunc(i.now),
		jwt.WithExpirationRequired(),
	)
	return c, tok, err
}
