package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/outposthq/outpost/internal/testtls"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestEnrollmentRoundTrip(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	iss, err := NewIssuer(testtls.Key(t), nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	s, c, err := iss.NewEnrollment(EnrollmentClaims{
		GatewayURL: "https://gw:7171", QUICEndpoint: "gw:4433", CASPKISHA256: "ab", AgentName: "office",
		Routes: &Routes{Subnets: []string{"10.0.0.0/24"}},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ExpiresAt.Sub(clk.t); got != DefaultEnrollmentTTL {
		t.Errorf("default TTL %v", got)
	}
	// Header carries typ JWT and cty ENROLLMENT.
	tok, _, err := jwt.NewParser().ParseUnverified(s, &EnrollmentClaims{})
	if err != nil || tok.Header["typ"] != "JWT" || tok.Header["cty"] != ContentEnrollment || tok.Header["alg"] != "ES256" {
		t.Fatalf("header %v (%v)", tok.Header, err)
	}
	got, err := iss.VerifyEnrollment(s, EnrollmentRules{Leeway: DefaultEnrollmentLeeway})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || got.AgentName != "office" || got.Scope != ScopeEnroll || got.Routes.Subnets[0] != "10.0.0.0/24" || got.CASPKISHA256 != "ab" {
		t.Fatalf("claims %+v", got)
	}
}

func TestEnrollmentRefusals(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	key, other, prov := testtls.Key(t), testtls.Key(t), testtls.Key(t)
	iss, _ := NewIssuer(key, []*ecdsa.PublicKey{&prov.PublicKey}, clk.now)
	good, _, _ := iss.NewEnrollment(EnrollmentClaims{}, time.Hour)

	sign := func(k *ecdsa.PrivateKey, m jwt.SigningMethod, c EnrollmentClaims, cty string) string {
		tok := jwt.NewWithClaims(m, c)
		if cty != "" {
			tok.Header["cty"] = cty
		}
		var s string
		var err error
		if m == jwt.SigningMethodHS256 {
			s, err = tok.SignedString([]byte("secret"))
		} else {
			s, err = tok.SignedString(k)
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() EnrollmentClaims {
		return EnrollmentClaims{
			RegisteredClaims: jwt.RegisteredClaims{ID: "0c6e2bd4-4d56-4e55-9a1c-6a3f7e0d1c22", ExpiresAt: jwt.NewNumericDate(clk.t.Add(time.Hour)), NotBefore: jwt.NewNumericDate(clk.t)},
			Scope:            ScopeEnroll,
		}
	}
	rules := EnrollmentRules{Audience: "https://gw:7171", ProvisionerAudience: "urn:outpost:gw-1", Leeway: DefaultEnrollmentLeeway}
	provBase := func() EnrollmentClaims {
		c := base()
		c.Audience = jwt.ClaimStrings{"urn:outpost:gw-1"}
		return c
	}
	provOK := sign(prov, jwt.SigningMethodES256, provBase(), ContentEnrollment)
	if _, err := iss.VerifyEnrollment(provOK, rules); err != nil {
		t.Fatalf("provisioner token refused: %v", err)
	}
	wrongScope := base()
	wrongScope.Scope = "session"
	noExp := base()
	noExp.ExpiresAt = nil
	badJTI := base()
	badJTI.ID = "not-a-uuid"
	expiredInLeeway := base()
	expiredInLeeway.ExpiresAt = jwt.NewNumericDate(clk.t.Add(-30 * time.Second))
	if _, err := iss.VerifyEnrollment(sign(key, jwt.SigningMethodES256, expiredInLeeway, ContentEnrollment), rules); err != nil {
		t.Fatalf("token 30 s past exp refused despite the 60 s leeway: %v", err)
	}
	expired := base()
	expired.ExpiresAt = jwt.NewNumericDate(clk.t.Add(-61 * time.Second))
	future := base()
	future.NotBefore = jwt.NewNumericDate(clk.t.Add(61 * time.Second))

	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"other key", sign(other, jwt.SigningMethodES256, base(), ContentEnrollment), ErrSignature},
		{"hs256", sign(nil, jwt.SigningMethodHS256, base(), ContentEnrollment), ErrSignature},
		{"no cty", sign(key, jwt.SigningMethodES256, base(), ""), ErrWrongKind},
		{"session cty", sign(key, jwt.SigningMethodES256, base(), "SESSION"), ErrWrongKind},
		{"wrong scope", sign(key, jwt.SigningMethodES256, wrongScope, ContentEnrollment), ErrWrongKind},
		{"no exp", sign(key, jwt.SigningMethodES256, noExp, ContentEnrollment), ErrMalformed},
		{"bad jti", sign(key, jwt.SigningMethodES256, badJTI, ContentEnrollment), ErrMalformed},
		{"expired", sign(key, jwt.SigningMethodES256, expired, ContentEnrollment), ErrExpired},
		{"not yet valid", sign(key, jwt.SigningMethodES256, future, ContentEnrollment), ErrNotYetValid},
		{"garbage", "not.a.jwt", ErrMalformed},
		{"tampered", good[:len(good)-4] + strings.Repeat("A", 4), ErrSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := iss.VerifyEnrollment(tc.token, rules)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// Provisioner tokens must name the gateway's provisioner audience; the
// gateway's own tokens, when they carry aud, must name the gateway's own.
func TestEnrollmentAudience(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	key, prov := testtls.Key(t), testtls.Key(t)
	iss, _ := NewIssuer(key, []*ecdsa.PublicKey{&prov.PublicKey}, clk.now)
	rules := EnrollmentRules{Audience: "https://gw:7171", ProvisionerAudience: "urn:outpost:gw-1"}
	mint := func(k *ecdsa.PrivateKey, aud ...string) string {
		t.Helper()
		signer, _ := NewIssuer(k, nil, clk.now)
		c := EnrollmentClaims{}
		if aud != nil {
			c.Audience = aud
		}
		s, _, err := signer.NewEnrollment(c, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		token string
		rules EnrollmentRules
		want  string // "" = accepted, else in the ErrAudience error
	}{
		{"provisioner, right aud", mint(prov, "urn:outpost:gw-1"), rules, ""},
		{"provisioner, right aud among others", mint(prov, "urn:outpost:gw-2", "urn:outpost:gw-1"), rules, ""},
		{"provisioner, no aud", mint(prov), rules, `aud [] does not name "urn:outpost:gw-1"`},
		{"provisioner, another gateway's aud", mint(prov, "urn:outpost:gw-2"), rules, `aud ["urn:outpost:gw-2"] does not name "urn:outpost:gw-1"`},
		{"provisioner, the gateway's own audience", mint(prov, "https://gw:7171"), rules, "does not name"},
		{"provisioner, no audience configured", mint(prov, "urn:outpost:gw-1"), EnrollmentRules{Audience: "https://gw:7171"}, "no provisioner audience configured"},
		{"own, no aud", mint(key), rules, ""},
		{"own, own aud", mint(key, "https://gw:7171"), rules, ""},
		{"own, another gateway's aud", mint(key, "https://other:7171"), rules, `aud ["https://other:7171"] does not name this gateway ("https://gw:7171")`},
		{"own, the provisioner audience", mint(key, "urn:outpost:gw-1"), rules, "does not name this gateway"},
		{"own, aud not checked", mint(key, "https://other:7171"), EnrollmentRules{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := iss.VerifyEnrollment(tc.token, tc.rules)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
			case !errors.Is(err, ErrAudience) || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("err = %v, want ErrAudience containing %q", err, tc.want)
			}
		})
	}
}

// The leeway on exp and nbf is the rules': none at zero, up to the maximum.
// A token is valid until (not at) exp plus the leeway.
func TestEnrollmentLeeway(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	key, prov := testtls.Key(t), testtls.Key(t)
	iss, _ := NewIssuer(key, []*ecdsa.PublicKey{&prov.PublicKey}, clk.now)
	provIss, _ := NewIssuer(prov, nil, clk.now)
	own, ownClaims, _ := iss.NewEnrollment(EnrollmentClaims{}, time.Second)
	provTok, _, _ := provIss.NewEnrollment(EnrollmentClaims{RegisteredClaims: jwt.RegisteredClaims{Audience: jwt.ClaimStrings{"aud"}}}, time.Second)
	exp := ownClaims.ExpiresAt.Time
	for _, tc := range []struct {
		leeway, after time.Duration // after: how long past exp the token is checked
		want          error
	}{
		{0, -time.Second, nil},
		{0, 0, ErrExpired},
		{-time.Minute, time.Second, ErrExpired},
		{DefaultEnrollmentLeeway, DefaultEnrollmentLeeway - time.Second, nil},
		{DefaultEnrollmentLeeway, DefaultEnrollmentLeeway, ErrExpired},
		{MaxEnrollmentLeeway, 4 * time.Minute, nil},
	} {
		clk.t = exp.Add(tc.after)
		r := EnrollmentRules{ProvisionerAudience: "aud", Leeway: tc.leeway}
		for name, tok := range map[string]string{"own": own, "provisioner": provTok} {
			if _, err := iss.VerifyEnrollment(tok, r); !errors.Is(err, tc.want) {
				t.Errorf("%s token %v past exp, leeway %v: %v, want %v", name, tc.after, tc.leeway, err, tc.want)
			}
		}
	}
	// nbf is held to the same leeway.
	clk.t = ownClaims.NotBefore.Add(-2 * time.Second)
	if _, err := iss.VerifyEnrollment(own, EnrollmentRules{}); !errors.Is(err, ErrNotYetValid) {
		t.Errorf("2 s before nbf with no leeway: %v", err)
	}
	if _, err := iss.VerifyEnrollment(own, EnrollmentRules{Leeway: 5 * time.Second}); err != nil {
		t.Errorf("2 s before nbf with 5 s leeway: %v", err)
	}
}

func TestNewIssuerRefusesOtherCurves(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewIssuer(k, nil, nil); err == nil {
		t.Fatal("P-384 signing key accepted")
	}
	if _, err := NewIssuer(testtls.Key(t), []*ecdsa.PublicKey{&k.PublicKey}, nil); err == nil {
		t.Fatal("P-384 provisioner key accepted")
	}
}

func TestSessionTokens(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	key, prov := testtls.Key(t), testtls.Key(t)
	iss, _ := NewIssuer(key, []*ecdsa.PublicKey{&prov.PublicKey}, clk.now)
	tok, claims, err := iss.NewSession(SessionClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "key-1"},
		Target:           "[2001:db8::1]:22", AgentID: "a", Reusable: true,
		MaxConnections: 5, MaxDurationMS: 1500,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if claims.ExpiresAt.Sub(clk.t) != DefaultSessionTTL {
		t.Fatalf("default ttl: %v", claims.ExpiresAt.Sub(clk.t))
	}
	got, err := iss.VerifySession(tok)
	if err != nil || got.Target != "[2001:db8::1]:22" || got.AgentID != "a" || !got.Reusable || got.ID != claims.ID ||
		got.KeyID() != "key-1" || got.MaxConnections != 5 || got.MaxDuration() != 1500*time.Millisecond {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// The claims on the wire: the key is the subject.
	mc := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, mc); err != nil || mc["sub"] != "key-1" ||
		mc["max_conn"] != float64(5) || mc["max_dur_ms"] != float64(1500) {
		t.Fatalf("wire claims %v %v", mc, err)
	}

	// No leeway: one second past exp is expired.
	clk.t = claims.ExpiresAt.Add(time.Second)
	if _, err := iss.VerifySession(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	clk.t = time.Unix(1_800_000_000, 0)

	enrollTok, _, _ := iss.NewEnrollment(EnrollmentClaims{}, 0)
	if _, err := iss.VerifySession(enrollTok); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("enrollment token as session: %v", err)
	}
	if _, err := iss.VerifyEnrollment(tok, EnrollmentRules{}); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("session token as enrollment: %v", err)
	}
	provIss, _ := NewIssuer(prov, nil, clk.now)
	withKey := jwt.RegisteredClaims{Subject: "key-1"}
	provTok, _, _ := provIss.NewSession(SessionClaims{RegisteredClaims: withKey, Target: "h:1"}, 0)
	if _, err := iss.VerifySession(provTok); !errors.Is(err, ErrSignature) {
		t.Fatalf("a provisioner may not mint session tokens: %v", err)
	}
	noDst, _, _ := iss.NewSession(SessionClaims{RegisteredClaims: withKey}, 0)
	if _, err := iss.VerifySession(noDst); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no dst: %v", err)
	}

	// No minting key: NewSession refuses to mint it, and a token signed
	// with the gateway's key some other way is refused all the same.
	if _, _, err := iss.NewSession(SessionClaims{Target: "h:1"}, 0); err == nil {
		t.Fatal("minted a session token without a key id")
	}
	for name, c := range map[string]SessionClaims{
		"no sub":              {Target: "h:1"},
		"negative max_dur_ms": {RegisteredClaims: withKey, Target: "h:1", MaxDurationMS: -1},
	} {
		c.Scope = ScopeSession
		raw, err := iss.sign(&c.RegisteredClaims, &c, ContentSession, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := iss.VerifySession(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
