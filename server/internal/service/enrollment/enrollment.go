// Package enrollment implements outpost.v1.EnrollmentService: minting enrollment
// tokens and enrolling agents from a CSR (DESIGN.md §5). Enrollment also sets
// the agent's approved routes (approval.ForEnrollment): the token's, narrowed
// by what the agent requests, or what it requests when the token names none.
// A requested route that is not approved is left out, not refused: the
// response's approved_routes says what was kept and the gateway logs the
// rest.
package enrollment

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/clientip"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/ratelimit"
	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// Limits on enrollment input.
const (
	MaxNameLen   = 255
	MaxRoutes    = 1024
	staticJTIPfx = "static-secret:"
)

// Defaults of Config (DESIGN.md §12).
const (
	// DefaultRateBurst is the number of Enroll calls allowed per source IP
	// per DefaultRateWindow.
	DefaultRateBurst = 10
	// DefaultRateWindow is the window DefaultRateBurst counts over.
	DefaultRateWindow = time.Minute
)

// Store is what enrollment needs from the gateway store.
type Store interface {
	RecordEnrollmentToken(ctx context.Context, t store.EnrollmentToken) error
	EnrollAgent(ctx context.Context, req store.EnrollRequest) (store.EnrollResult, error)
}

// Config configures a Service. Zero values mean the defaults given.
type Config struct {
	// PublicURL and QUICEndpoint go into tokens and Enroll answers. Required.
	PublicURL    string
	QUICEndpoint string
	// EnrollmentSecret, if set, is a static bearer accepted by Enroll in place of
	// a token (compared in constant time).
	EnrollmentSecret string
	// ProvisionerAudience is the aud that tokens signed by a provisioner key
	// must carry; empty refuses them all (token.EnrollmentRules).
	ProvisionerAudience string
	// TokenLeeway is the clock skew tolerated on enrollment tokens' exp and
	// nbf, as given: zero means none (the gateway passes its configured
	// value, by default token.DefaultEnrollmentLeeway).
	TokenLeeway time.Duration
	// RateBurst Enroll calls are allowed per source IP per RateWindow.
	// If zero, DefaultRateBurst (10) and DefaultRateWindow (1 min).
	RateBurst  int
	RateWindow time.Duration
	// Enrollments counts Enroll calls by outcome; may be nil.
	Enrollments *prometheus.CounterVec
	// ClientIP finds the source address rate limits count against; the zero
	// value trusts no proxy.
	ClientIP clientip.Resolver
	// Now is the clock. If nil, time.Now.
	Now    func() time.Time
	Logger hclog.Logger
}

// withDefaults returns a copy of c with every zero field filled in.
func (c Config) withDefaults() Config {
	c.RateBurst = cmp.Or(c.RateBurst, DefaultRateBurst)
	c.RateWindow = cmp.Or(c.RateWindow, DefaultRateWindow)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Service implements EnrollmentService. It is safe for concurrent use.
type Service struct {
	outpostv1.UnimplementedEnrollmentServiceServer
	cfg    Config
	pki    *pki.Authority
	tokens *token.Issuer
	store  Store
	limit  *ratelimit.PerKey
	log    hclog.Logger
}

var _ outpostv1.EnrollmentServiceServer = (*Service)(nil)

// New returns a Service signing with ca, minting and checking tokens with
// tokens, and persisting to s.
func New(ca *pki.Authority, tokens *token.Issuer, s Store, cfg Config) (*Service, error) {
	if ca == nil || tokens == nil || s == nil {
		return nil, errors.New("enrollment: nil authority, issuer or store")
	}
	if cfg.PublicURL == "" || cfg.QUICEndpoint == "" {
		return nil, errors.New("enrollment: public URL and QUIC endpoint are required")
	}
	cfg = cfg.withDefaults()
	return &Service{
		cfg: cfg, pki: ca, tokens: tokens, store: s,
		limit: ratelimit.New(cfg.RateBurst, cfg.RateWindow),
		log:   cfg.Logger,
	}, nil
}

// CreateEnrollmentToken mints a single-use enrollment token.
func (s *Service) CreateEnrollmentToken(ctx context.Context, req *outpostv1.CreateEnrollmentTokenRequest) (*outpostv1.CreateEnrollmentTokenResponse, error) {
	if n := req.GetAgentName(); n != "" {
		if err := ValidateName(n); err != nil {
			return nil, grpcerr.InvalidArgument("agent_name", err.Error())
		}
	}
	ttl := token.DefaultEnrollmentTTL
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, grpcerr.InvalidArgument("ttl", err.Error())
		}
		ttl = d.AsDuration()
		if ttl <= 0 || ttl > token.MaxEnrollmentTTL {
			return nil, grpcerr.InvalidArgument("ttl", fmt.Sprintf("must be more than 0 and at most %v", token.MaxEnrollmentTTL))
		}
	}
	routes, err := validateRoutes(req.GetRoutes())
	if err != nil {
		return nil, err
	}
	c := token.EnrollmentClaims{
		GatewayURL:   s.cfg.PublicURL,
		QUICEndpoint: s.cfg.QUICEndpoint,
		CASPKISHA256: s.pki.CASPKISHA256(),
		AgentName:    req.GetAgentName(),
		Routes:       routes,
	}
	c.Audience = []string{s.rules().Audience}
	tok, claims, err := s.tokens.NewEnrollment(c, ttl)
	if err != nil {
		return nil, grpcerr.From(err)
	}
	if err := s.store.RecordEnrollmentToken(ctx, store.EnrollmentToken{
		JTI: claims.ID, AgentName: claims.AgentName, ExpiresAt: claims.ExpiresAt.Time, CreatedAt: claims.IssuedAt.Time,
	}); err != nil {
		return nil, grpcerr.From(fmt.Errorf("record enrollment token: %w", err))
	}
	by := ""
	if k, ok := auth.KeyFromContext(ctx); ok {
		by = k.ID
	}
	s.log.Info("enrollment token created", "token_id", claims.ID, "agent_name", claims.AgentName, "expires_at", claims.ExpiresAt.Time, "api_key", by)
	return &outpostv1.CreateEnrollmentTokenResponse{
		Token:     tok,
		TokenId:   claims.ID,
		ExpiresAt: timestamppb.New(claims.ExpiresAt.Time),
	}, nil
}

// Enroll signs an agent's CSR once per token.
func (s *Service) Enroll(ctx context.Context, req *outpostv1.EnrollRequest) (resp *outpostv1.EnrollResponse, err error) {
	defer func() { s.count(err) }()
	ip := s.cfg.ClientIP.FromContext(ctx)
	if !s.limit.AllowAddr(ip, s.cfg.Now()) {
		return nil, grpcerr.Errorf(grpcerr.ErrRateLimited, "too many enrollment attempts from %s: at most %d per %v", ip, s.cfg.RateBurst, s.cfg.RateWindow)
	}
	cred, err := s.checkBearer(ctx)
	if err != nil {
		return nil, err
	}
	jti, expires := cred.jti, cred.expires
	name := req.GetAgentName()
	if name == "" {
		name = cred.name
	}
	if name == "" {
		return nil, grpcerr.InvalidArgument("agent_name", "is required (the token names no agent)")
	}
	if err := ValidateName(name); err != nil {
		return nil, grpcerr.InvalidArgument("agent_name", err.Error())
	}
	hostname := strings.ToLower(req.GetAgentHostname())
	if hostname != "" {
		if !pki.ValidHostName(hostname) {
			return nil, grpcerr.InvalidArgument("agent_hostname", fmt.Sprintf("%q is not a valid DNS name", req.GetAgentHostname()))
		}
	}
	csr, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, grpcerr.InvalidArgument("csr_pem", err.Error())
	}
	approved, dropped, err := approveRoutes(cred.routes, req.GetRequestedRoutes())
	if err != nil {
		return nil, err
	}
	approvedSubnets, approvedDomains := approved.Strings()
	csrSum := sha256.Sum256(csr.Raw)
	csrHash := hex.EncodeToString(csrSum[:])
	if jti == "" {
		// A static secret enrolls any number of agents: one "token" per CSR keeps
		// a retry of the same request idempotent.
		jti = staticJTIPfx + csrHash
		expires = s.cfg.Now().Add(token.DefaultEnrollmentTTL)
	}

	id := uuid.New()
	issued, err := s.pki.SignAgent(csr, id, name, hostname)
	if err != nil {
		return nil, grpcerr.From(fmt.Errorf("sign agent certificate: %w", err))
	}
	res, err := s.store.EnrollAgent(ctx, store.EnrollRequest{
		JTI:            jti,
		TokenExpiresAt: expires,
		CSRSHA256:      csrHash,
		CertPEM:        issued.PEM,
		Agent: store.Agent{
			ID: id.String(), Name: name, Hostname: hostname,
			SPKISHA256: issued.SPKISHA256, CertSerial: issued.Serial,
			CertNotAfter: issued.NotAfter, EnrolledAt: s.cfg.Now().UTC(),
			ApprovedRoutes: store.RouteSet{Subnets: approvedSubnets, Domains: approvedDomains},
		},
	})
	switch {
	case errors.Is(err, store.ErrTokenUsed):
		return nil, grpcerr.Errorf(err, "enrollment token already used")
	case errors.Is(err, store.ErrNameTaken):
		return nil, grpcerr.Errorf(err, "agent name %q is already taken", name)
	case err != nil:
		return nil, grpcerr.From(fmt.Errorf("store agent: %w", err))
	}
	s.log.Info("agent enrolled", "agent_id", res.Agent.ID, "name", res.Agent.Name, "source", ip.String(), "replayed", res.Replayed,
		"approved_subnets", strings.Join(res.Agent.ApprovedRoutes.Subnets, ","), "approved_domains", strings.Join(res.Agent.ApprovedRoutes.Domains, ","))
	if len(dropped) > 0 && !res.Replayed {
		s.log.Warn("requested routes not approved at enrollment", "agent_id", res.Agent.ID, "name", res.Agent.Name, "routes", joinDropped(dropped))
	}
	return &outpostv1.EnrollResponse{
		AgentId:          res.Agent.ID,
		ClientCertPem:    string(res.CertPEM),
		CaCertPem:        string(s.pki.CACertPEM()),
		QuicEndpoint:     s.cfg.QUICEndpoint,
		ServerSpkiSha256: s.pki.ServerSPKISHA256(),
		CertNotAfter:     timestamppb.New(res.Agent.CertNotAfter),
		ApprovedRoutes: &outpostv1.RouteSet{
			Subnets: res.Agent.ApprovedRoutes.Subnets,
			Domains: res.Agent.ApprovedRoutes.Domains,
		},
	}, nil
}

// approveRoutes returns the approved set of an enrolling agent from the
// routes its token names (nil: none) and the routes it requests
// (approval.ForEnrollment), with the requested routes left out.
// INVALID_ARGUMENT for a malformed requested route, or a malformed route in
// the token (one from an external provisioner: the gateway's own tokens
// carry checked routes).
func approveRoutes(tokenRoutes *token.Routes, requested *outpostv1.RouteSet) (approval.Set, []approval.Dropped, error) {
	req, err := approval.Parse(requested.GetSubnets(), requested.GetDomains())
	var ie *approval.InputError
	if errors.As(err, &ie) {
		return approval.Set{}, nil, grpcerr.InvalidArgument("requested_routes."+ie.Field, ie.Reason)
	}
	var tok approval.Set
	if tokenRoutes != nil {
		tok, err = approval.Parse(tokenRoutes.Subnets, tokenRoutes.Domains)
		if errors.As(err, &ie) {
			return approval.Set{}, nil, grpcerr.InvalidArgument("token routes", ie.Error())
		}
	}
	approved, dropped := approval.ForEnrollment(tok, req)
	return approved, dropped, nil
}

func joinDropped(ds []approval.Dropped) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return strings.Join(out, "; ")
}

// credential is what a verified enrollment bearer carries.
type credential struct {
	jti     string        // the token's id; empty for the static secret
	expires time.Time     // the token's expiry; zero for the static secret
	name    string        // the agent name the token carries, if any
	routes  *token.Routes // the routes the token pre-approves, if any
}

// checkBearer verifies the enrollment credential.
func (s *Service) checkBearer(ctx context.Context) (credential, error) {
	bearer := auth.BearerFromContext(ctx)
	if bearer == "" {
		return credential{}, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "missing enrollment token: send 'authorization: Bearer <token>'")
	}
	if secret := s.cfg.EnrollmentSecret; secret != "" && subtle.ConstantTimeCompare([]byte(bearer), []byte(secret)) == 1 {
		return credential{}, nil
	}
	c, err := s.tokens.VerifyEnrollment(bearer, s.rules())
	switch {
	case errors.Is(err, token.ErrWrongKind):
		return credential{}, grpcerr.Errorf(err, "not an enrollment token: %v", err)
	case err != nil:
		return credential{}, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "enrollment token refused: %v", err)
	}
	return credential{jti: c.ID, expires: c.ExpiresAt.Time, name: c.AgentName, routes: c.Routes}, nil
}

// rules are what enrollment tokens are held to: the gateway's own tokens
// name its public URL in aud, a provisioner's name the provisioner audience.
func (s *Service) rules() token.EnrollmentRules {
	return token.EnrollmentRules{Audience: s.cfg.PublicURL, ProvisionerAudience: s.cfg.ProvisionerAudience, Leeway: s.cfg.TokenLeeway}
}

func (s *Service) count(err error) {
	if s.cfg.Enrollments == nil {
		return
	}
	outcome := "success"
	if err != nil {
		outcome = strings.ToLower(status.Code(err).String())
	}
	s.cfg.Enrollments.WithLabelValues(outcome).Inc()
}

// ValidateName checks an agent name: 1 to 255 printable ASCII characters.
func ValidateName(n string) error {
	if n == "" || len(n) > MaxNameLen {
		return fmt.Errorf("must be 1 to %d characters, got %d", MaxNameLen, len(n))
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d (0x%02x) is not printable ASCII", i, c)
		}
	}
	return nil
}

// validateRoutes checks and normalises the routes a token pre-approves.
func validateRoutes(rs *outpostv1.RouteSet) (*token.Routes, error) {
	if rs == nil || len(rs.GetSubnets())+len(rs.GetDomains()) == 0 {
		return nil, nil
	}
	if len(rs.GetSubnets()) > MaxRoutes || len(rs.GetDomains()) > MaxRoutes {
		return nil, grpcerr.InvalidArgument("routes", fmt.Sprintf("at most %d subnets and %d domains", MaxRoutes, MaxRoutes))
	}
	out := &token.Routes{}
	for i, sn := range rs.GetSubnets() {
		p, err := netip.ParsePrefix(sn)
		if err != nil || !p.Addr().Is4() {
			return nil, grpcerr.InvalidArgument(fmt.Sprintf("routes.subnets[%d]", i), fmt.Sprintf("%q is not an IPv4 CIDR subnet", sn))
		}
		out.Subnets = append(out.Subnets, p.String())
	}
	for i, d := range rs.GetDomains() {
		norm, err := dataplane.ValidateDomainRoute(d)
		if err != nil {
			return nil, grpcerr.InvalidArgument(fmt.Sprintf("routes.domains[%d]", i), err.Error())
		}
		out.Domains = append(out.Domains, norm)
	}
	return out, nil
}
