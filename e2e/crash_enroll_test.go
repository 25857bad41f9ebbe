package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

// pendingEnrollment is one agent's enrollment request, repeatable: the same
// token, CSR and name each time.
type pendingEnrollment struct {
	token, jti, name string
	csrPEM           string
}

func newPendingEnrollment(t *testing.T, token, name string) pendingEnrollment {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pendingEnrollment{token: token, name: name,
		csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
}

// tokenJTI reads the jti of a token the gateway minted (its claims, not
// verified).
func tokenJTI(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		JTI string `json:"jti"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.JTI == "" {
		t.Fatalf("token claims %s: %v", payload, err)
	}
	return claims.JTI
}

// enroll sends the request to the gateway at url (trusting caPEM) and
// returns the agent id it answers.
func (p pendingEnrollment) enroll(ctx context.Context, url string, caPEM []byte) (string, error) {
	conn, err := apiclient.Dial(apiclient.Config{Gateway: url, APIKey: p.token, CAPEM: caPEM})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	resp, err := outpostv1.NewEnrollmentServiceClient(conn).Enroll(ctx, &outpostv1.EnrollRequest{CsrPem: p.csrPEM, AgentName: p.name})
	return resp.GetAgentId(), err
}

// kill -9 of the gateway while enrollments are in flight: afterwards every
// token is either consumed with its agent stored, or not consumed at all
// (enrolling with it again works and makes a new agent). An enrollment the
// client saw succeed before the kill is stored, and enrolling again with
// the same token and CSR answers the same agent (idempotent retry); with
// another CSR the consumed token is refused.
func TestGatewayKilledDuringEnrollment(t *testing.T) {
	const n = 40
	dataDir := t.TempDir()
	gw := startGateway(t, dataDir, nil)
	pending := make([]pendingEnrollment, n)
	for i := range pending {
		name := fmt.Sprintf("crash-%02d", i)
		pending[i] = newPendingEnrollment(t, gw.token(&outpostv1.CreateEnrollmentTokenRequest{AgentName: name}), name)
		pending[i].jti = tokenJTI(t, pending[i].token)
	}
	listen, quicListen, caPEM := gw.g.Addr().String(), gw.g.QUICAddr().String(), gw.g.CACertPEM()
	gw.stop()

	proc := gatewayProcess(t, dataDir, listen, quicListen, "--enroll-rate-limit", "100000")
	url := "https://" + listen
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		succeeded = map[string]string{} // name → agent id the client was told
		firstOK   = make(chan struct{})
		once      sync.Once
	)
	for _, p := range pending {
		wg.Go(func() {
			id, err := p.enroll(ctx, url, caPEM)
			if err != nil {
				return // killed mid-call, or not yet served: either way unknown to the client
			}
			mu.Lock()
			succeeded[p.name] = id
			mu.Unlock()
			once.Do(func() { close(firstOK) })
		})
	}
	select {
	case <-firstOK:
	case <-ctx.Done():
		t.Fatal("no enrollment succeeded through the gateway process")
	}
	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	proc.Wait()
	wg.Wait()
	mu.Lock()
	before := len(succeeded)
	mu.Unlock()

	gw2 := startGateway(t, dataDir, func(c *server.Config) { c.Listen, c.QUICListen = listen, quicListen })
	// What the store holds after the crash: consumed tokens and the agents
	// they made, joined both ways.
	db := gw2.auditDB()
	consumed := map[string]string{} // jti → agent name ("" when the agent row is missing)
	rows, err := db.QueryContext(ctx, `SELECT c.jti, COALESCE(a.name, '') FROM consumed_enrollment_tokens c LEFT JOIN agents a ON a.id = c.agent_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var jti, name string
		if err := rows.Scan(&jti, &name); err != nil {
			t.Fatal(err)
		}
		consumed[jti] = name
	}
	rows.Close()
	var orphans int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM agents WHERE id NOT IN (SELECT agent_id FROM consumed_enrollment_tokens)`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d agents stored without their token consumed", orphans)
	}

	var stored, fresh int
	for _, p := range pending {
		name, wasConsumed := consumed[p.jti]
		switch {
		case wasConsumed && name != p.name:
			t.Errorf("token of %s consumed, but its agent is %q", p.name, name)
		case !wasConsumed && succeeded[p.name] != "":
			t.Errorf("%s: the client was told agent %s, but its token is not consumed", p.name, succeeded[p.name])
		}
		id, err := p.enroll(ctx, gw2.url, caPEM)
		if err != nil {
			t.Errorf("%s: enrolling again with the same token and CSR after the crash (consumed=%v): %v", p.name, wasConsumed, err)
			continue
		}
		if was := succeeded[p.name]; was != "" && id != was {
			t.Errorf("%s: the retry answered agent %s, the client was told %s before the crash", p.name, id, was)
		}
		if wasConsumed {
			stored++
			other := newPendingEnrollment(t, p.token, p.name)
			if _, err := other.enroll(ctx, gw2.url, caPEM); err == nil {
				t.Errorf("%s: a consumed token enrolled another CSR", p.name)
			}
		} else {
			fresh++
		}
	}
	t.Logf("%d enrollments succeeded before the kill; after it %d tokens were consumed with their agent and %d not consumed at all", before, stored, fresh)
}
