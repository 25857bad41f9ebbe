// Package enroll turns a one-time enrollment token (or the gateway's static
// enrollment secret) into an agent identity: it generates the agent's private
// key locally, sends only a CSR to the gateway (over HTTPS pinned to the CA in
// the token, or given with the secret), and writes key, certificate, CA and
// agent.json atomically, restoring the previous files if anything fails.
package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outposthq/outpost/agent/internal/config"
	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/atomicfile"
	"github.com/outposthq/outpost/reach"
)

// Files written inside the config directory, relative to it.
const (
	KeyFile  = "certs/agent.key"
	CertFile = "certs/agent.pem"
	CAFile   = "certs/gateway-ca.pem"
)

// leeway tolerates clock skew when checking the token's expiry locally. It
// is the most a gateway may be configured to tolerate (its
// enrollment_token_leeway, at most 5 min): the gateway decides, this only
// spares a call it would refuse anyway.
const leeway = 5 * time.Minute

// maxResponse bounds the gateway's answer.
const maxResponse = 1 << 20

// Sentinel errors for callers (and tests) to branch on.
var (
	ErrTokenMalformed = errors.New("enrollment token is malformed")
	ErrTokenExpired   = errors.New("enrollment token has expired")
	ErrPinMismatch    = errors.New("gateway CA does not match the token's pin")
	ErrUnreachable    = errors.New("cannot reach the gateway")
	ErrRefused        = errors.New("gateway refused enrollment")
	ErrConfigDir      = errors.New("config directory is not usable")
)

// Claims are the enrollment token claims the agent reads (without verifying the
// signature: the gateway does that; the agent only needs where to go and what to pin).
type Claims struct {
	ID           string `json:"jti"`
	ExpiresAt    int64  `json:"exp"`
	NotBefore    int64  `json:"nbf"`
	Scope        string `json:"scope"`
	GatewayURL   string `json:"gw_url"`
	QUICEndpoint string `json:"quic_endpoint"`
	CASPKISHA256 string `json:"ca_spki_sha256"`
	AgentName    string `json:"agent_name"`
	Routes       *struct {
		Subnets []string `json:"subnets"`
		Domains []string `json:"domains"`
	} `json:"routes"`
}

// DecodeToken reads a token's claims without verifying its signature, and checks
// the fields the agent needs.
func DecodeToken(tok string) (Claims, error) {
	var c Claims
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return c, fmt.Errorf("%w: the token is empty", ErrTokenMalformed)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%w: a token is a JWT, three base64url parts joined by dots; this has %d (was it cut when copied?)", ErrTokenMalformed, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, fmt.Errorf("%w: payload is not base64url: %v", ErrTokenMalformed, err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("%w: payload is not JSON: %v", ErrTokenMalformed, err)
	}
	switch {
	case c.CASPKISHA256 == "":
		return c, fmt.Errorf("%w: no ca_spki_sha256 claim", ErrTokenMalformed)
	case c.ExpiresAt == 0:
		return c, fmt.Errorf("%w: no exp claim", ErrTokenMalformed)
	}
	if err := checkGateway(c.GatewayURL, c.CASPKISHA256, "gw_url", "ca_spki_sha256"); err != nil {
		return c, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	return c, nil
}

// checkGateway checks where enrollment goes: an https URL and a CA pin, named
// in errors as urlName and pinName.
func checkGateway(gatewayURL, pin, urlName, pinName string) error {
	if u, err := url.Parse(gatewayURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%s %q is not an https URL", urlName, gatewayURL)
	}
	if _, err := transport.ParsePin(pin); err != nil {
		return fmt.Errorf("%s: %v", pinName, err)
	}
	return nil
}

// Options for Enroll. ConfigDir and one credential are required: Token, or
// Secret with GatewayURL and CAPin.
type Options struct {
	// Token is the enrollment JWT; it names the gateway and its CA pin.
	Token string
	// Secret is the gateway's static enrollment secret, sent in place of a
	// token. It names no gateway: GatewayURL and CAPin say where to go.
	Secret string
	// GatewayURL is the gateway's HTTPS base URL, with Secret.
	GatewayURL string
	// CAPin is the SHA-256 of the gateway CA's SubjectPublicKeyInfo (64 hex
	// digits), with Secret: the HTTPS call trusts only that CA.
	CAPin string
	// ConfigDir holds agent.json and certs/.
	ConfigDir string
	// Name and Hostname override the agent name (default: the token's, else the
	// host name) and the DNS SAN host name (default: none).
	Name, Hostname string
	// Subnets and Domains to advertise; nil keeps the token's routes, else what
	// agent.json already had. They are also the routes the agent asks the
	// gateway to approve (EnrollRequest.requested_routes).
	Subnets, Domains []string
	// QUICEndpoint overrides the token's and the gateway's endpoint.
	QUICEndpoint string
	// Timeout bounds the whole exchange with the gateway. If zero, 30 s.
	Timeout time.Duration
	// Now is the clock (nil: time.Now); Rand the entropy source (nil: crypto/rand).
	Now    func() time.Time
	Rand   io.Reader
	Logger hclog.Logger
}

// Result describes the identity written.
type Result struct {
	AgentID         string
	AgentName       string
	GatewayEndpoint string
	CertNotAfter    time.Time
	ConfigPath      string
	// ApprovedSubnets and ApprovedDomains are the routes the gateway
	// approved for the agent (canonical; empty when none).
	ApprovedSubnets, ApprovedDomains []string
	// UnapprovedRoutes are the routes the agent will advertise that the
	// gateway did not approve: sessions do not reach them until an operator
	// approves them. Enroll also logs them as a warning.
	UnapprovedRoutes []string
}

// Enroll performs the whole enrollment. On error nothing in ConfigDir has
// changed, and directories it created for the identity are removed again.
func Enroll(ctx context.Context, o Options) (_ Result, err error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	claims, bearer, err := o.credential()
	if err != nil {
		return Result{}, err
	}
	undo, err := prepareDir(o.ConfigDir)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	cfg, _, err := config.Load(o.ConfigDir)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrConfigDir, err)
	}

	name := firstNonEmpty(o.Name, claims.AgentName)
	if name == "" {
		if h, err := os.Hostname(); err == nil {
			name = h
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), o.Rand)
	if err != nil {
		return Result{}, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(o.Rand, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return Result{}, fmt.Errorf("create csr: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	// The routes the agent will advertise: the flags', else the token's,
	// else what agent.json already had. They are the routes it asks the
	// gateway to approve.
	subnets, domains := cfg.Tunnel.AdvertiseSubnets, cfg.Tunnel.AdvertiseDomains
	switch {
	case o.Subnets != nil:
		subnets = o.Subnets
	case claims.Routes != nil && claims.Routes.Subnets != nil:
		subnets = claims.Routes.Subnets
	}
	switch {
	case o.Domains != nil:
		domains = o.Domains
	case claims.Routes != nil && claims.Routes.Domains != nil:
		domains = claims.Routes.Domains
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	o.Logger.Info("enrolling", "gateway", claims.GatewayURL, "name", name)
	resp, err := callEnroll(ctx, claims, bearer, &outpostv1.EnrollRequest{
		CsrPem: string(csrPEM), AgentName: name, AgentHostname: o.Hostname,
		RequestedRoutes: &outpostv1.RouteSet{Subnets: trimAll(subnets), Domains: trimAll(domains)},
	})
	if err != nil {
		return Result{}, err
	}
	if err := checkIssued(resp, key); err != nil {
		return Result{}, err
	}
	notApproved := unapproved(subnets, domains, resp.GetApprovedRoutes())
	if len(notApproved) > 0 {
		o.Logger.Warn("the gateway did not approve some of the routes this agent advertises: sessions will not reach them until an operator approves them",
			"routes", strings.Join(notApproved, ", "))
	}

	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Result{}, err
	}
	t := &cfg.Tunnel
	t.Enabled = true
	t.GatewayEndpoint = firstNonEmpty(o.QUICEndpoint, claims.QUICEndpoint, resp.GetQuicEndpoint())
	t.ClientCertPath, t.ClientKeyPath, t.GatewayCaCertPath = CertFile, KeyFile, CAFile
	t.ServerSpkiSha256 = resp.GetServerSpkiSha256()
	t.AgentId, t.AgentName = resp.GetAgentId(), name
	t.AdvertiseSubnets, t.AdvertiseDomains = subnets, domains
	cfgBytes, err := cfg.Marshal()
	if err != nil {
		return Result{}, err
	}
	err = writeAll(o.ConfigDir, []file{
		{KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{CertFile, []byte(resp.GetClientCertPem()), 0o644},
		{CAFile, []byte(resp.GetCaCertPem()), 0o644},
		{config.FileName, cfgBytes, 0o600},
	})
	if err != nil {
		return Result{}, err
	}
	return Result{
		AgentID:          resp.GetAgentId(),
		AgentName:        name,
		GatewayEndpoint:  t.GatewayEndpoint,
		CertNotAfter:     resp.GetCertNotAfter().AsTime(),
		ConfigPath:       filepath.Join(o.ConfigDir, config.FileName),
		ApprovedSubnets:  nonNil(resp.GetApprovedRoutes().GetSubnets()),
		ApprovedDomains:  nonNil(resp.GetApprovedRoutes().GetDomains()),
		UnapprovedRoutes: notApproved,
	}, nil
}

// unapproved returns the configured routes that the approved set does not
// hold, compared in canonical form (subnets masked, domains lower-cased) as
// the gateway writes them.
func unapproved(subnets, domains []string, approved *outpostv1.RouteSet) []string {
	var out []string
	for _, s := range subnets {
		c := strings.TrimSpace(s)
		if p, err := reach.ParseSubnet(c); err == nil {
			c = p.Masked().String()
		}
		if !slices.Contains(approved.GetSubnets(), c) {
			out = append(out, s)
		}
	}
	for _, d := range domains {
		c := strings.TrimSpace(d)
		if r, err := reach.ParseDomain(c); err == nil {
			c = r.String()
		}
		if !slices.Contains(approved.GetDomains(), c) {
			out = append(out, d)
		}
	}
	return out
}

// trimAll returns vs with surrounding space trimmed from each, as the
// agent reads them from agent.json.
func trimAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.TrimSpace(v)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// credential returns where to enroll (the token's claims, or those the
// static secret comes with) and the bearer to send.
func (o Options) credential() (Claims, string, error) {
	switch {
	case o.Secret != "" && o.Token != "":
		return Claims{}, "", errors.New("enroll: give a token or a static secret, not both")
	case o.Secret != "" && o.CAPin == "":
		return Claims{}, "", errors.New("enroll with a static secret: no CA pin given (the gateway's ca_spki_sha256)")
	case o.Secret != "":
		c := Claims{GatewayURL: o.GatewayURL, CASPKISHA256: o.CAPin}
		if err := checkGateway(c.GatewayURL, c.CASPKISHA256, "gateway URL", "CA pin"); err != nil {
			return Claims{}, "", fmt.Errorf("enroll with a static secret: %w", err)
		}
		return c, o.Secret, nil
	case o.GatewayURL != "" || o.CAPin != "":
		return Claims{}, "", errors.New("enroll: a gateway URL and CA pin go with a static secret; a token names its own")
	}
	c, err := DecodeToken(o.Token)
	if err != nil {
		return Claims{}, "", err
	}
	if exp := time.Unix(c.ExpiresAt, 0); o.Now().After(exp.Add(leeway)) {
		return Claims{}, "", fmt.Errorf("%w (expired at %s); ask for a new one", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	return c, o.Token, nil
}

// prepareDir makes sure the config directory and certs/ exist and take a
// file, before the credential is spent on the gateway. undo removes the
// directories it created (only while they are empty), so that a failed
// enrollment leaves nothing behind.
func prepareDir(dir string) (undo func(), err error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: no config directory given", ErrConfigDir)
	}
	certs := filepath.Join(dir, "certs")
	var created []string // deepest first
	for p := certs; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		created = append(created, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	undo = func() {
		for _, p := range created {
			os.Remove(p)
		}
	}
	if err := os.MkdirAll(certs, 0o700); err != nil {
		undo()
		return nil, fmt.Errorf("%w: %v", ErrConfigDir, err)
	}
	probe, err := os.CreateTemp(certs, ".probe-*")
	if err != nil {
		undo()
		return nil, fmt.Errorf("%w: %s is not writable: %v", ErrConfigDir, dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return undo, nil
}

// callEnroll posts the request to the gateway's REST Enroll endpoint.
func callEnroll(ctx context.Context, c Claims, bearer string, req *outpostv1.EnrollRequest) (*outpostv1.EnrollResponse, error) {
	u, _ := url.Parse(c.GatewayURL)
	pin, err := transport.ParsePin(c.CASPKISHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: ca_spki_sha256: %v", ErrTokenMalformed, err)
	}
	body, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	endpoint := strings.TrimRight(c.GatewayURL, "/") + "/v1/enroll"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+strings.TrimSpace(bearer))
	client := &http.Client{Transport: &http.Transport{
		// Trusts exactly the CA whose key the token pins: the gateway must
		// present it after its certificate, which must verify against it.
		TLSClientConfig:     transport.CAPinnedTLS(u.Hostname(), pin),
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
	}}
	defer client.CloseIdleConnections()
	hresp, err := client.Do(hreq)
	if err != nil {
		var pe *transport.PinError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("gateway at %s: %w: %w", c.GatewayURL, ErrPinMismatch, pe)
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.GatewayURL, err)
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: reading the answer: %v", ErrUnreachable, c.GatewayURL, err)
	}
	if hresp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &st) != nil || st.Message == "" {
			st.Message = strings.TrimSpace(string(raw))
		}
		return nil, fmt.Errorf("%w: %s (HTTP %d)", ErrRefused, st.Message, hresp.StatusCode)
	}
	var resp outpostv1.EnrollResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("gateway answer is not an EnrollResponse: %v", err)
	}
	return &resp, nil
}

// checkIssued makes sure the certificate is for our key and chains to the CA sent.
func checkIssued(resp *outpostv1.EnrollResponse, key *ecdsa.PrivateKey) error {
	cb, _ := pem.Decode([]byte(resp.GetClientCertPem()))
	ab, _ := pem.Decode([]byte(resp.GetCaCertPem()))
	if cb == nil || ab == nil {
		return errors.New("gateway answer lacks a PEM certificate or CA")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("gateway sent a bad certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(ab.Bytes)
	if err != nil {
		return fmt.Errorf("gateway sent a bad CA certificate: %v", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("gateway issued a certificate for another key")
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("issued certificate does not chain to the CA sent: %v", err)
	}
	return nil
}

type file struct {
	rel  string
	data []byte
	perm os.FileMode
}

// writeAll writes every file atomically; if one fails, the ones already written
// get their previous content back (or are removed if they did not exist).
func writeAll(dir string, files []file) error {
	type backup struct {
		path   string
		data   []byte
		perm   os.FileMode
		exists bool
	}
	var done []backup
	for _, f := range files {
		path := filepath.Join(dir, f.rel)
		b := backup{path: path}
		if old, err := os.ReadFile(path); err == nil {
			fi, _ := os.Stat(path)
			b.data, b.perm, b.exists = old, fi.Mode().Perm(), true
		}
		if err := atomicfile.WriteFile(path, f.data, f.perm); err != nil {
			for i := len(done) - 1; i >= 0; i-- {
				if done[i].exists {
					atomicfile.WriteFile(done[i].path, done[i].data, done[i].perm)
				} else {
					os.Remove(done[i].path)
				}
			}
			return fmt.Errorf("%w: write %s: %v", ErrConfigDir, path, err)
		}
		done = append(done, b)
	}
	return nil
}
