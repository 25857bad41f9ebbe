package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testtls"
)

// csrPEM is a PEM CSR signed by key for the subject CN=cn.
func csrPEM(t *testing.T, key crypto.Signer, cn string) string {
	t.Helper()
	return string(testtls.CSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}))
}

// tokenKey is the gateway's token signing key (from its authority, so it is
// the same on either store).
func tokenKey(g *Gateway) *ecdsa.PrivateKey { return g.pki.TokenKey() }

// craft signs an enrollment-shaped JWT with key; edit changes the claims.
func craft(t *testing.T, key *ecdsa.PrivateKey, cty string, edit func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{
		"jti": uuid.NewString(), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"scope": "enroll", "gw_url": "https://localhost:7171", "quic_endpoint": "localhost:4433",
		"ca_spki_sha256": strings.Repeat("0", 64),
	}
	if edit != nil {
		edit(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	if cty != "" {
		tok.Header["cty"] = cty
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func enrollCall(ctx context.Context, c outpostv1.EnrollmentServiceClient, bearer string, req *outpostv1.EnrollRequest) (*outpostv1.EnrollResponse, error) {
	if bearer != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
	}
	return c.Enroll(ctx, req)
}

func TestEnrollServerChecks(t *testing.T) {
	dir := t.TempDir()
	prov := testtls.Key(t)
	provDER, _ := x509.MarshalPKIXPublicKey(&prov.PublicKey)
	provPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: provDER}))
	g, err := newTestGateway(t, Config{
		DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
		EnrollmentSecret: "static-secret-0123456789", ProvisionerPublicKey: provPEM, ProvisionerAudience: "urn:outpost:test-gw",
		EnrollRateLimit: 1000,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, g)
	client := outpostv1.NewEnrollmentServiceClient(r.grpcConn(t))
	ctx := context.Background()
	key := tokenKey(g)
	other := testtls.Key(t)
	good := func() string { return craft(t, key, "ENROLLMENT", nil) }

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	validCSR := csrPEM(t, testtls.Key(t), "whatever")
	tampered := []byte(validCSR)
	blk, _ := pem.Decode(tampered)
	blk.Bytes[len(blk.Bytes)-3] ^= 0xff
	tamperedCSR := string(pem.EncodeToMemory(blk))
	oversized := "-----BEGIN CERTIFICATE REQUEST-----\n" + strings.Repeat("A", 16<<10) + "\n-----END CERTIFICATE REQUEST-----\n"

	cases := []struct {
		name   string
		bearer string
		req    *outpostv1.EnrollRequest
		want   codes.Code
		msg    string
	}{
		{"no bearer", "", &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, "missing"},
		{"api key is not a token", adminKey(t, dir), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, ""},
		{"bad signature", craft(t, other, "ENROLLMENT", nil), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, "signature"},
		{"expired", craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, "expired"},
		{"not yet valid", craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, "not valid yet"},
		{"own key, another gateway's aud", craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["aud"] = "https://other.example:7171" }), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.Unauthenticated, "does not name this gateway"},
		{"wrong scope", craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["scope"] = "session" }), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.PermissionDenied, "scope"},
		{"wrong cty", craft(t, key, "SESSION", nil), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a"}, codes.PermissionDenied, "content type"},
		{"no name", good(), &outpostv1.EnrollRequest{CsrPem: validCSR}, codes.InvalidArgument, "agent_name"},
		{"name not printable", good(), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "bad\x01name"}, codes.InvalidArgument, "agent_name"},
		{"name too long", good(), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: strings.Repeat("n", 256)}, codes.InvalidArgument, "agent_name"},
		{"bad hostname", good(), &outpostv1.EnrollRequest{CsrPem: validCSR, AgentName: "a", AgentHostname: "not a host"}, codes.InvalidArgument, "agent_hostname"},
		{"csr not pem", good(), &outpostv1.EnrollRequest{CsrPem: "hello", AgentName: "a"}, codes.InvalidArgument, "csr_pem"},
		{"tampered csr", good(), &outpostv1.EnrollRequest{CsrPem: tamperedCSR, AgentName: "a"}, codes.InvalidArgument, "csr"},
		{"rsa csr", good(), &outpostv1.EnrollRequest{CsrPem: csrPEM(t, rsaKey, "a"), AgentName: "a"}, codes.InvalidArgument, "P-256"},
		{"p384 csr", good(), &outpostv1.EnrollRequest{CsrPem: csrPEM(t, p384, "a"), AgentName: "a"}, codes.InvalidArgument, "P-256"},
		{"ed25519 csr", good(), &outpostv1.EnrollRequest{CsrPem: csrPEM(t, edKey, "a"), AgentName: "a"}, codes.InvalidArgument, "P-256"},
		{"oversized csr", good(), &outpostv1.EnrollRequest{CsrPem: oversized, AgentName: "a"}, codes.InvalidArgument, "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := enrollCall(ctx, client, tc.bearer, tc.req)
			if status.Code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}

	t.Run("own key, own aud", func(t *testing.T) {
		tok := craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["aud"] = r.g.cfg.PublicURL })
		if _, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "own-aud"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("token name used and csr subject ignored", func(t *testing.T) {
		tok := craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) { c["agent_name"] = "from-token" })
		resp, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "evil-cn")})
		if err != nil {
			t.Fatal(err)
		}
		cert := testtls.ParseCert(t, []byte(resp.GetClientCertPem()))
		if cert.Subject.CommonName != "from-token" {
			t.Fatalf("CN %q", cert.Subject.CommonName)
		}
	})
	t.Run("idempotent retry", func(t *testing.T) {
		tok := good()
		req := &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "retry"}
		first, err := enrollCall(ctx, client, tok, req)
		if err != nil {
			t.Fatal(err)
		}
		second, err := enrollCall(ctx, client, tok, req)
		if err != nil {
			t.Fatalf("retry of the same request: %v", err)
		}
		if first.GetAgentId() != second.GetAgentId() || first.GetClientCertPem() != second.GetClientCertPem() {
			t.Fatal("retry returned a different answer")
		}
		_, err = enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "retry2"})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("replay with another CSR: %v", err)
		}
	})
	t.Run("static secret", func(t *testing.T) {
		if _, err := enrollCall(ctx, client, "static-secret-0123456789", &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "static-1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := enrollCall(ctx, client, "static-secret-0123456789", &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "static-2"}); err != nil {
			t.Fatalf("the static secret enrolls more than one agent: %v", err)
		}
		if _, err := enrollCall(ctx, client, "static-secret-012345678", &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "static-3"}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("a near-miss secret: %v", err)
		}
	})
	t.Run("provisioner jwt", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			aud  any
			want string
		}{
			{"no aud", nil, `aud [] does not name "urn:outpost:test-gw"`},
			{"another gateway's", "urn:outpost:other-gw", `aud ["urn:outpost:other-gw"] does not name "urn:outpost:test-gw"`},
			{"the gateway's own", r.g.cfg.PublicURL, `aud ["` + r.g.cfg.PublicURL + `"] does not name`},
		} {
			tok := craft(t, prov, "ENROLLMENT", func(c jwt.MapClaims) {
				c["agent_name"] = "provisioned-" + strings.ReplaceAll(tc.name, " ", "-")
				if tc.aud != nil {
					c["aud"] = tc.aud
				}
			})
			_, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x")})
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "audience not accepted: provisioner token's "+tc.want) {
				t.Errorf("provisioner token, aud %s: %v, want Unauthenticated naming the audience", tc.name, err)
			}
		}
		tok := craft(t, prov, "ENROLLMENT", func(c jwt.MapClaims) {
			c["agent_name"] = "provisioned"
			c["aud"] = []string{"urn:outpost:other-gw", "urn:outpost:test-gw"}
		})
		if _, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x")}); err != nil {
			t.Fatal(err)
		}
		if _, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x")}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("provisioner token replay: %v", err)
		}
	})
	t.Run("duplicate name", func(t *testing.T) {
		if _, err := enrollCall(ctx, client, good(), &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "Twin"}); err != nil {
			t.Fatal(err)
		}
		tok := good()
		_, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "twin"})
		if status.Code(err) != codes.AlreadyExists {
			t.Fatalf("%v", err)
		}
		// The name clash did not spend the token.
		if _, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "twin-2"}); err != nil {
			t.Fatalf("token spent by a refused enrollment: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		tok := good()
		var wg sync.WaitGroup
		var mu sync.Mutex
		okCount := 0
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := enrollCall(ctx, client, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "conc-" + string(rune('a'+i))})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					okCount++
				} else if status.Code(err) != codes.PermissionDenied {
					t.Errorf("unexpected: %v", err)
				}
			}()
		}
		wg.Wait()
		if okCount != 1 {
			t.Fatalf("%d succeeded, want 1", okCount)
		}
	})
}

// A provisioner key without an audience, or an audience without a key, is
// a config error.
func TestProvisionerAudienceRequired(t *testing.T) {
	der, _ := x509.MarshalPKIXPublicKey(&testtls.Key(t).PublicKey)
	provPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ProvisionerPublicKey: provPEM}, "provisioner_public_key needs provisioner_audience"},
		{Config{ProvisionerAudience: "urn:outpost:gw"}, "provisioner_audience is set but provisioner_public_key is not"},
	} {
		tc.cfg.DataDir, tc.cfg.Listen, tc.cfg.QUICListen = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
		if _, err := New(tc.cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error containing %q", err, tc.want)
		}
	}
}

// The leeway on enrollment tokens is the gateway's setting: with 0, a token
// is refused the second it expires; by default it still enrolls for 60 s.
// The gateway's clock is a fake one, moved instead of waited for.
func TestEnrollmentTokenLeeway(t *testing.T) {
	leeway := func(d time.Duration) *Duration { v := Duration(d); return &v }
	for _, tc := range []struct {
		name    string
		leeway  *Duration
		after   time.Duration // how long past exp Enroll is called
		refused bool
	}{
		{"none, just before exp", leeway(0), 999 * time.Millisecond, false},
		{"none, at exp", leeway(0), time.Second, true},
		{"default, 59 s past exp", nil, time.Second + 59*time.Second, false},
		{"default, 60 s past exp", nil, time.Second + 60*time.Second, true},
		{"5 min, 4 min past exp", leeway(5 * time.Minute), time.Second + 4*time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := fakeclock.New(time.Now().Truncate(time.Second))
			g, err := newTestGateway(t, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
				EnrollmentTokenLeeway: tc.leeway, Now: clk.Now}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			r := run(t, g)
			client := outpostv1.NewEnrollmentServiceClient(r.grpcConn(t))
			ctx := context.Background()
			minted, err := client.CreateEnrollmentToken(withKey(ctx, adminKey(t, dir)),
				&outpostv1.CreateEnrollmentTokenRequest{AgentName: "leeway", Ttl: durationpb.New(time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			claims := jwt.MapClaims{}
			if _, _, err := jwt.NewParser().ParseUnverified(minted.GetToken(), claims); err != nil {
				t.Fatal(err)
			}
			if aud, _ := claims.GetAudience(); len(aud) != 1 || aud[0] != g.cfg.PublicURL {
				t.Errorf("minted token's aud %v, want the public URL %s", aud, g.cfg.PublicURL)
			}
			clk.Advance(tc.after)
			_, err = enrollCall(ctx, client, minted.GetToken(), &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x")})
			switch {
			case tc.refused && (status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "expired")):
				t.Fatalf("Enroll %v after issue: %v, want Unauthenticated: expired", tc.after, err)
			case !tc.refused && err != nil:
				t.Fatalf("Enroll %v after issue: %v", tc.after, err)
			}
		})
	}
}

// The JSON config takes the audience and the leeway; "0s" is none, not the
// default.
func TestEnrollmentSettingsFromJSON(t *testing.T) {
	f := filepath.Join(t.TempDir(), "gw.json")
	os.WriteFile(f, []byte(`{"data_dir": "x", "provisioner_audience": "urn:outpost:gw", "enrollment_token_leeway": "0s"}`), 0o600)
	c, err := LoadConfigFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProvisionerAudience != "urn:outpost:gw" || c.enrollmentTokenLeeway() != 0 {
		t.Errorf("audience %q, leeway %v", c.ProvisionerAudience, c.enrollmentTokenLeeway())
	}
	if d := (Config{}).enrollmentTokenLeeway(); d != 60*time.Second {
		t.Errorf("default leeway %v, want 60 s", d)
	}
}

// The leeway is bounded: 0 to 5 min.
func TestEnrollmentTokenLeewayBounds(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 5*time.Minute + time.Second} {
		v := Duration(d)
		err := Config{DataDir: "x", EnrollmentTokenLeeway: &v}.withDefaults().validate()
		if err == nil || !strings.Contains(err.Error(), "enrollment_token_leeway") {
			t.Errorf("leeway %v: %v", d, err)
		}
	}
	for _, d := range []time.Duration{0, 5 * time.Minute} {
		v := Duration(d)
		if err := (Config{DataDir: "x", EnrollmentTokenLeeway: &v}).withDefaults().validate(); err != nil {
			t.Errorf("leeway %v: %v", d, err)
		}
	}
}

func TestEnrollRateLimit(t *testing.T) {
	dir := t.TempDir()
	g, err := newTestGateway(t, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, g)
	client := outpostv1.NewEnrollmentServiceClient(r.grpcConn(t))
	for i := range 10 {
		if _, err := enrollCall(context.Background(), client, "bogus", &outpostv1.EnrollRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if _, err := enrollCall(context.Background(), client, "bogus", &outpostv1.EnrollRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("11th call in a minute: %v", err)
	}
	// REST shares the per-IP budget and maps it to 429.
	code, body := r.rest(t, "POST", "/v1/enroll", "", strings.NewReader(`{}`))
	if code != 429 {
		t.Fatalf("REST after the limit: %d %v", code, body)
	}
}

func TestCreateEnrollmentTokenValidation(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	key := adminKey(t, dir)
	cases := []struct {
		body string
		want int
		msg  string
	}{
		{`{"agent_name": "ok", "ttl": "600s", "routes": {"subnets": ["10.0.0.0/8"], "domains": ["*.Contoso.local"]}}`, 200, ""},
		{`{"ttl": "-5s"}`, 400, "ttl"},
		{`{"ttl": "99999999s"}`, 400, "ttl"},
		{`{"agent_name": "bad\u0007"}`, 400, "agent_name"},
		{`{"routes": {"subnets": ["10.0.0.0/33"]}}`, 400, "routes.subnets[0]"},
		{`{"routes": {"subnets": ["2001:db8::/32"]}}`, 400, "routes.subnets[0]"},
		{`{"routes": {"domains": ["a..b"]}}`, 400, "routes.domains[0]"},
	}
	for _, tc := range cases {
		code, body := r.rest(t, "POST", "/v1/enrollment-tokens", key, strings.NewReader(tc.body))
		if code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.body, code, body, tc.want)
			continue
		}
		if msg, _ := body["message"].(string); !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: message %q lacks %q", tc.body, msg, tc.msg)
		}
		if code == 200 {
			tok, _ := body["token"].(string)
			claims := jwt.MapClaims{}
			if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
				t.Fatal(err)
			}
			if claims["ca_spki_sha256"] != r.g.pki.CASPKISHA256() || claims["jti"] != body["token_id"] || claims["scope"] != "enroll" {
				t.Errorf("claims %v", claims)
			}
		}
	}
}
