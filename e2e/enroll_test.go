package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testtls"
	"github.com/outposthq/outpost/server"
)

func enroll(t *testing.T, tok, dir string, mutate func(*agent.EnrollOptions)) (agent.EnrollResult, error) {
	t.Helper()
	o := agent.EnrollOptions{Token: tok, ConfigDir: dir}
	if mutate != nil {
		mutate(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return agent.Enroll(ctx, o, testLogger(t, "agent"))
}

func TestEnrollSuccess(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "office-1", Routes: &outpostv1.RouteSet{Subnets: []string{"10.10.0.0/24"}, Domains: []string{"Contoso.Local"}}})

	dir := t.TempDir()
	// A foreign key in agent.json must survive enrollment.
	os.WriteFile(filepath.Join(dir, "agent.json"), []byte(`{"Other": {"keep": true}, "Tunnel": {"AgentName": "stale"}}`), 0o600)
	res, err := enroll(t, tok, dir, func(o *agent.EnrollOptions) { o.Hostname = "jump01.contoso.local" })
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if res.AgentName != "office-1" {
		t.Errorf("name %q, want the token's", res.AgentName)
	}

	for f, mode := range map[string]os.FileMode{"certs/agent.key": 0o600, "certs/agent.pem": 0o644, "certs/gateway-ca.pem": 0o644, "agent.json": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", f, fi.Mode().Perm(), mode)
		}
	}
	cert := testtls.ReadCert(t, filepath.Join(dir, "certs/agent.pem"))
	ca := testtls.ReadCert(t, filepath.Join(dir, "certs/gateway-ca.pem"))
	if cert.Subject.CommonName != "office-1" {
		t.Errorf("CN %q", cert.Subject.CommonName)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:uuid:"+res.AgentID {
		t.Errorf("URI SANs %v, want urn:uuid:%s", cert.URIs, res.AgentID)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "jump01.contoso.local" {
		t.Errorf("DNS SANs %v", cert.DNSNames)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU %v, want clientAuth only", cert.ExtKeyUsage)
	}
	if v := cert.NotAfter.Sub(cert.NotBefore); v < 29*24*time.Hour || v > 31*24*time.Hour {
		t.Errorf("validity %v, want about 30 days", v)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		t.Errorf("cert does not chain to the CA written: %v", err)
	}
	// The key on disk is the certificate's key.
	key := testtls.ReadKey(t, filepath.Join(dir, "certs/agent.key"))
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("certificate is not for the key on disk")
	}

	var cfg map[string]json.RawMessage
	raw, _ := os.ReadFile(filepath.Join(dir, "agent.json"))
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if string(cfg["Other"]) == "" || !strings.Contains(string(cfg["Other"]), `"keep": true`) {
		t.Errorf("foreign key lost: %s", raw)
	}
	var tun struct {
		Enabled                                               bool
		GatewayEndpoint, AgentId, AgentName, ServerSpkiSha256 string
		ClientCertPath, ClientKeyPath, GatewayCaCertPath      string
		AdvertiseSubnets, AdvertiseDomains                    []string
	}
	json.Unmarshal(cfg["Tunnel"], &tun)
	if !tun.Enabled || tun.AgentId != res.AgentID || tun.AgentName != "office-1" || tun.GatewayEndpoint != "localhost:"+portOf(gw.g.QUICAddr()) {
		t.Errorf("tunnel section %+v", tun)
	}
	if len(tun.AdvertiseSubnets) != 1 || tun.AdvertiseSubnets[0] != "10.10.0.0/24" || len(tun.AdvertiseDomains) != 1 || tun.AdvertiseDomains[0] != "contoso.local" {
		t.Errorf("routes from the token not written: %+v", tun)
	}
	// The server pin written is the key the gateway serves with.
	leaf := gw.g.ServerCertificate()
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if tun.ServerSpkiSha256 != hex.EncodeToString(sum[:]) {
		t.Errorf("server pin %s, want %x", tun.ServerSpkiSha256, sum)
	}

	code, body := gw.restGet("/v1/agents")
	if code != 200 || !strings.Contains(body, res.AgentID) || !strings.Contains(body, `"AGENT_STATUS_OFFLINE"`) {
		t.Fatalf("GET /v1/agents: %d %s", code, body)
	}
	code, body = gw.restGet("/v1/agents/" + res.AgentID)
	if code != 200 || !strings.Contains(body, `"name":"office-1"`) && !strings.Contains(body, `"name": "office-1"`) {
		t.Fatalf("GET /v1/agents/id: %d %s", code, body)
	}

	// Replay: the token is spent, and the identity on disk is untouched.
	before, _ := os.ReadFile(filepath.Join(dir, "certs/agent.pem"))
	_, err = enroll(t, tok, dir, nil)
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replay: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "certs/agent.pem"))
	if !bytes.Equal(before, after) {
		t.Error("a failed enrollment changed the identity on disk")
	}
}

func TestEnrollFailuresAreClear(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)

	t.Run("malformed token", func(t *testing.T) {
		_, err := enroll(t, "not-a-token", t.TempDir(), nil)
		if !errors.Is(err, agent.ErrTokenMalformed) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "x"})
		_, err := enroll(t, tok, t.TempDir(), func(o *agent.EnrollOptions) {
			o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		})
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("duplicate name", func(t *testing.T) {
		if _, err := enroll(t, gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "dup"}), t.TempDir(), nil); err != nil {
			t.Fatal(err)
		}
		_, err := enroll(t, gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "DUP"}), t.TempDir(), nil)
		if err == nil || !strings.Contains(err.Error(), "already taken") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("unwritable config dir", func(t *testing.T) {
		parent := t.TempDir()
		file := filepath.Join(parent, "file")
		os.WriteFile(file, nil, 0o600)
		tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "nowrite"})
		_, err := enroll(t, tok, filepath.Join(file, "dir"), nil)
		if err == nil || !strings.Contains(err.Error(), "config directory") {
			t.Fatalf("%v", err)
		}
		// The token was not spent on the failed attempt.
		if _, err := enroll(t, tok, t.TempDir(), nil); err != nil {
			t.Fatalf("token spent by a failed local check: %v", err)
		}
	})
	t.Run("gateway unreachable", func(t *testing.T) {
		// A token naming a port where nothing listens.
		other := startGateway(t, t.TempDir(), nil)
		tok := other.tokenFor(t, "https://127.0.0.1:1")
		_, err := enroll(t, tok, t.TempDir(), nil)
		if err == nil || !strings.Contains(err.Error(), "cannot reach the gateway") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("ca pin mismatch", func(t *testing.T) {
		// Gateway B mints a token whose URL points at gateway A: A's CA does
		// not match B's pin.
		b := startGateway(t, t.TempDir(), nil)
		tok := b.tokenFor(t, gw.url)
		dir := t.TempDir()
		_, err := enroll(t, tok, dir, nil)
		if err == nil || !strings.Contains(err.Error(), "pin") {
			t.Fatalf("%v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "certs")); !os.IsNotExist(err) {
			t.Errorf("certs/ left behind after a pin mismatch: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "agent.json")); err == nil {
			t.Error("agent.json written after a pin mismatch")
		}
	})
}

// tokenFor mints a token on gw whose gw_url is url, by running a second
// gateway process over gw's data dir with a different public URL.
func (gw *gateway) tokenFor(t *testing.T, url string) string {
	t.Helper()
	gw.stop()
	alt := startGateway(t, gw.cfg.DataDir, func(c *server.Config) { c.PublicURL = url })
	return alt.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "pinned-" + strings.ReplaceAll(t.Name(), "/", "-")})
}

func TestEnrollTokenSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	gw := startGateway(t, dir, nil)
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "after-restart"})
	gw.stop()

	// Same ports again: the token names the first start's URL.
	samePorts := func(c *server.Config) {
		c.Listen, c.QUICListen = gw.g.Addr().String(), gw.g.QUICAddr().String()
	}
	gw2 := startGateway(t, dir, samePorts)
	if _, err := enroll(t, tok, t.TempDir(), nil); err != nil {
		t.Fatalf("token minted before a restart: %v", err)
	}
	gw2.stop()

	startGateway(t, dir, samePorts)
	if _, err := enroll(t, tok, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("consumed state lost on restart: %v", err)
	}
}

func TestEnrollConcurrentOneToken(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: "race"})
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = agent.Enroll(context.Background(), agent.EnrollOptions{Token: tok, ConfigDir: t.TempDir()}, nil)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !strings.Contains(err.Error(), "already used"):
			t.Errorf("unexpected failure: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent enrollments succeeded, want exactly 1", ok, n)
	}
	code, body := gw.restGet("/v1/agents")
	if code != 200 || strings.Count(body, `"agent_id"`) != 1 {
		t.Fatalf("agents after the race: %s", body)
	}
}

func TestEnrollSubprocess(t *testing.T) {
	bin := outpostBinary(t)
	gw := startGateway(t, t.TempDir(), nil)
	tok := gw.token(&outpostv1.CreateEnrollmentTokenRequest{})
	dir := t.TempDir()
	cmd := exec.Command(bin, "agent", "enroll", "--token", "-", "--name", "sub-agent", "--advertise-subnets", "10.1.0.0/16,10.2.0.0/16")
	cmd.Env = append(os.Environ(), "OUTPOST_AGENT_DIR="+dir)
	cmd.Stdin = strings.NewReader(tok + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("outpost agent enroll: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `enrolled agent "sub-agent"`) {
		t.Errorf("output: %s", out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "agent.json"))
	if err != nil || !strings.Contains(string(raw), "10.2.0.0/16") {
		t.Fatalf("agent.json: %v %s", err, raw)
	}

	// The same token again: one clear line, non-zero exit.
	cmd = exec.Command(bin, "agent", "enroll", "--token", tok, "--config-dir", t.TempDir())
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("replay exited %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); !strings.Contains(lines[len(lines)-1], "already used") {
		t.Errorf("replay output: %s", out)
	}

	// The admin CLI mints tokens too.
	cmd = exec.Command(bin, "gateway", "token", "create", "--gateway", gw.url, "--api-key-file", filepath.Join(gw.cfg.DataDir, "admin.key"), "--ca-file", gw.caFile(), "--name", "cli-token")
	out, err = cmd.Output()
	if err != nil || strings.Count(strings.TrimSpace(string(out)), ".") != 2 {
		t.Fatalf("token create: %v %s", err, out)
	}

	// ... and writes them to a file (0600) the agent reads on stdin.
	tokFile := filepath.Join(t.TempDir(), "token.jwt")
	cmd = exec.Command(bin, "gateway", "token", "create", "--gateway", gw.url, "--api-key-file", filepath.Join(gw.cfg.DataDir, "admin.key"), "--ca-file", gw.caFile(), "--name", "from-file", "--token-file", tokFile)
	out, err = cmd.Output()
	if fi, serr := os.Stat(tokFile); err != nil || len(out) != 0 || serr != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token create --token-file: %v, stdout %q, file %v %v", err, out, fi, serr)
	}
	f, _ := os.Open(tokFile)
	defer f.Close()
	cmd = exec.Command(bin, "agent", "enroll", "--token", "-", "--config-dir", t.TempDir())
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `enrolled agent "from-file"`) {
		t.Fatalf("enroll from the token file: %v %s", err, out)
	}
}

// caPin is the SHA-256 of gw's CA public key, hex: what an operator gives
// "agent enroll --ca-pin" with a static secret.
func caPin(t *testing.T, gw *gateway) string {
	t.Helper()
	sum := sha256.Sum256(testtls.ParseCert(t, gw.g.CACertPEM()).RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// The shipped agent enrolls with the gateway's static secret: "outpost agent
// enroll --secret-file F --gateway URL --ca-pin HEX" over loopback, pinned to
// the CA given; the identity it writes connects. A wrong pin or secret is
// refused and leaves nothing behind.
func TestEnrollStaticSecret(t *testing.T) {
	const secret = "static-enrollment-secret-0123456789"
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.EnrollmentSecret = secret })
	pin := caPin(t, gw)
	secretFile := filepath.Join(t.TempDir(), "enrollment.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := outpostBinary(t)

	dir := filepath.Join(t.TempDir(), "agent-data")
	cmd := exec.Command(bin, "agent", "enroll", "--secret-file", secretFile, "--gateway", gw.url, "--ca-pin", pin,
		"--name", "static-agent", "--advertise-subnets", "127.0.0.0/8", "--config-dir", dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("outpost agent enroll --secret-file: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `enrolled agent "static-agent"`) || strings.Contains(string(out), secret) {
		t.Errorf("output: %s", out)
	}
	id, ok := agent.Enrolled(dir)
	if !ok {
		t.Fatal("no identity written")
	}
	startAgent(t, fastAgent(dir))
	if v := gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second); v.GetName() != "static-agent" {
		t.Errorf("agent view %v", v)
	}

	// The secret enrolls more than one agent.
	if _, err := enroll(t, "", t.TempDir(), func(o *agent.EnrollOptions) {
		o.Secret, o.GatewayURL, o.CAPin, o.Name = secret, gw.url, pin, "static-agent-2"
	}); err != nil {
		t.Fatalf("second agent with the same secret: %v", err)
	}

	t.Run("wrong pin", func(t *testing.T) {
		other := startGateway(t, t.TempDir(), nil)
		dir := t.TempDir()
		_, err := enroll(t, "", dir, func(o *agent.EnrollOptions) {
			o.Secret, o.GatewayURL, o.CAPin, o.Name = secret, gw.url, caPin(t, other), "pinned"
		})
		if !errors.Is(err, agent.ErrPinMismatch) {
			t.Fatalf("%v, want ErrPinMismatch", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("left behind after a pin mismatch: %v", entries)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		wrong := filepath.Join(t.TempDir(), "wrong.secret")
		os.WriteFile(wrong, []byte("not-the-gateway-secret-000"), 0o600)
		dir := t.TempDir()
		cmd := exec.Command(bin, "agent", "enroll", "--secret-file", wrong, "--gateway", gw.url, "--ca-pin", pin, "--name", "refused", "--config-dir", dir)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "gateway refused enrollment") || !strings.Contains(string(out), "HTTP 401") {
			t.Fatalf("wrong secret: %v\n%s", err, out)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("left behind after a refusal: %v", entries)
		}
	})
}
