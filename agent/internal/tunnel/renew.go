package tunnel

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/atomicfile"
)

// Certificate renewal (DESIGN.md §4, §7). Each connection runs renewLoop,
// but only the primary one (replicas.go) renews:
// once NotAfter − now ≤ RenewFraction × (NotAfter − NotBefore) it sends a
// CertRenewalRequest with a CSR made from the key in ClientKeyPath — the key
// the connection proved with mTLS, since the gateway signs only that key —
// and waits for the CertRenewalResponse. On Success it checks the new
// certificate, writes the CA and the certificate atomically, closes the
// connection with "cert-renewed" and Run reconnects at once with the new
// certificate; the other connections then reconnect with it one at a time
// (replicas.go). On an Error answer, a timeout or an unusable answer it logs a
// warning, counts the failure (RenewalFailures), keeps the connection and
// retries after a backoff; the backoff state outlives the connection, so a
// reconnect does not cause an early retry.

// errCertRenewed is what serve returns after closing the connection with
// "cert-renewed": Run reconnects without delay.
var errCertRenewed = errors.New("tunnel: certificate renewed")

// errRenewTimeout is a CertRenewalResponse that did not come within
// RenewTimeout.
var errRenewTimeout = errors.New("no CertRenewalResponse in time")

// renewTime is when cert is due for renewal with fraction: the moment when
// fraction of its lifetime is left.
func renewTime(cert *x509.Certificate, fraction float64) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Add(-time.Duration(float64(life) * fraction))
}

// renewAnswers hands the gateway's CertRenewalResponses from readControl to
// renewLoop. The gateway answers requests in order on the control stream, so
// the n-th response answers the n-th request of the connection: only the
// latest response and the count matter, and an answer that comes after its
// request timed out is recognized as stale. Safe for concurrent use.
type renewAnswers struct {
	ready chan struct{} // a token after each put; capacity 1

	mu   sync.Mutex
	n    uint64                         // responses received on the connection
	last *dataplane.CertRenewalResponse // the n-th
}

func newRenewAnswers() *renewAnswers {
	return &renewAnswers{ready: make(chan struct{}, 1)}
}

// put records a response; it never blocks.
func (r *renewAnswers) put(m *dataplane.CertRenewalResponse) {
	r.mu.Lock()
	r.n++
	r.last = m
	r.mu.Unlock()
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// wait returns the answer to request number seq (counted from 1 on the
// connection), errRenewTimeout after timeout, or ctx's error.
func (r *renewAnswers) wait(ctx context.Context, seq uint64, timeout time.Duration) (*dataplane.CertRenewalResponse, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		n, last := r.n, r.last
		r.mu.Unlock()
		if n >= seq {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, errRenewTimeout
		case <-r.ready:
		}
	}
}

// renewLoop renews the certificate of slot's connection (set.cert) when it
// is due and the connection is the primary one, until ctx ends, the agent
// drains, or a renewal succeeds (then it has closed conn with
// "cert-renewed").
func (a *Agent) renewLoop(ctx context.Context, conn *quic.Conn, slot int, w *dataplane.ControlWriter, set *settings, answers *renewAnswers, log hclog.Logger) {
	due := renewTime(set.cert, a.cfg.RenewFraction)
	var sent uint64 // requests sent on this connection
	for {
		a.mu.Lock()
		next, draining := due, a.draining
		if a.renewRetryAt.After(next) {
			next = a.renewRetryAt
		}
		a.mu.Unlock()
		if draining {
			return
		}
		if wait := next.Sub(a.cfg.Now()); wait > 0 {
			t := time.NewTimer(min(wait, a.cfg.RenewCheckInterval))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}

		if changed := a.fleet.changes(); !a.fleet.claimRenewal(slot) {
			// Another connection renews; if it goes down, this one may
			// become the primary.
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		log.Info("renewing the agent certificate", "not_after", set.cert.NotAfter)
		cert, err := a.renew(ctx, conn, w, set, answers, &sent)
		a.fleet.endRenewal(slot)
		if err != nil && ctx.Err() != nil {
			return // the connection ended: not the renewal's failure
		}
		now := a.cfg.Now()
		a.mu.Lock()
		if err != nil {
			a.renewStreak++
			delay := a.renewBackoff(a.renewStreak)
			a.renewRetryAt = now.Add(delay)
			a.mu.Unlock()
			n := a.renewFailures.Add(1)
			log.Warn("certificate renewal failed; still using the current certificate",
				"error", err, "not_after", set.cert.NotAfter, "failures", n, "retry_in", delay)
			continue
		}
		a.renewStreak = 0
		a.renewRetryAt = now.Add(a.cfg.RenewBackoffMin)
		draining = a.draining
		if !draining {
			// Under mu, so that a drain starting now finds the connection
			// closed rather than closing it under the drain's feet. The
			// other connections follow one at a time once this one is
			// back (rollOver).
			a.fleet.renewed(slot, cert.Raw)
			transport.Close(conn, dataplane.CloseCertRenewed)
		}
		a.mu.Unlock()
		log.Info("agent certificate renewed", "not_after", cert.NotAfter, "serial", cert.SerialNumber.Text(16))
		if !now.Before(renewTime(cert, a.cfg.RenewFraction)) {
			log.Warn("the renewed certificate is already due for renewal: the gateway's agent certificate validity is too short for the renewal threshold, or this host's clock is ahead",
				"not_before", cert.NotBefore, "not_after", cert.NotAfter, "now", now, "next_attempt_after", a.cfg.RenewBackoffMin)
		}
		if draining {
			log.Info("draining: the renewed certificate will be used by the next run")
		}
		return
	}
}

// renewBackoff is the delay after the streak-th consecutive failure:
// RenewBackoffMin doubled streak−1 times, capped at RenewBackoffMax, minus
// a random part of up to half.
func (a *Agent) renewBackoff(streak int) time.Duration {
	d := a.cfg.RenewBackoffMax
	if streak-1 < 30 {
		d = min(d, a.cfg.RenewBackoffMin<<(streak-1))
	}
	return d - mrand.N(d/2+1)
}

// renew makes one renewal attempt and, on success, has written the new
// certificate (and CA) to disk. *sent counts the requests of the connection.
func (a *Agent) renew(ctx context.Context, conn *quic.Conn, w *dataplane.ControlWriter, set *settings, answers *renewAnswers, sent *uint64) (*x509.Certificate, error) {
	key, err := loadKey(set)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: set.cert.Subject.CommonName}, // the gateway ignores it
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	req := &dataplane.CertRenewalRequest{
		Version: dataplane.ProtocolVersion,
		CSRPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
	}
	if err := w.Send(req); err != nil {
		return nil, fmt.Errorf("send CertRenewalRequest: %w", err)
	}
	*sent++
	resp, err := answers.wait(ctx, *sent, a.cfg.RenewTimeout)
	if err != nil {
		return nil, err
	}
	if resp.Result != dataplane.ResultSuccess {
		return nil, fmt.Errorf("the gateway refused: %s", strconv.Quote(resp.Reason))
	}
	cert, err := checkRenewed(resp, set, key.Public(), conn.ConnectionState().TLS.PeerCertificates)
	if err != nil {
		return nil, err
	}
	if err := installRenewed(set, []byte(resp.ClientCertPEM), []byte(resp.CACertPEM)); err != nil {
		return nil, err
	}
	return cert, nil
}

// loadKey reads the private key from ClientKeyPath and checks that it is the
// key of the connection's certificate: a different key (the agent was
// enrolled again since connecting) would be refused by the gateway.
func loadKey(set *settings) (crypto.Signer, error) {
	keyPEM, err := os.ReadFile(set.keyPath)
	if err != nil {
		return nil, fmt.Errorf("read the agent key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: set.cert.Raw})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the agent key in %s is not the key of the connection's certificate: %w", set.keyPath, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the agent key in %s cannot sign", set.keyPath)
	}
	return signer, nil
}

// checkRenewed checks a Success answer: a certificate for pub, for the same
// agent (URI SANs), usable for client auth and chaining to the CA sent, and
// a CA that also verifies the gateway's own certificate (server, as
// presented on this connection) so that writing it cannot lock the agent
// out. The chain is checked at the middle of the new certificate's validity,
// not at the agent's clock: the gateway judges validity by its own clock.
func checkRenewed(resp *dataplane.CertRenewalResponse, set *settings, pub crypto.PublicKey, server []*x509.Certificate) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(resp.ClientCertPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the renewed certificate is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the renewed certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(resp.CACertPEM)) {
		return nil, errors.New("the CA sent with the renewed certificate is not a PEM certificate")
	}
	if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return nil, errors.New("the renewed certificate is for another key")
	}
	for _, u := range set.cert.URIs {
		if !slices.ContainsFunc(cert.URIs, func(v *url.URL) bool { return v.String() == u.String() }) {
			return nil, fmt.Errorf("the renewed certificate lacks the agent's identity %s", u)
		}
	}
	mid := cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: mid, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("the renewed certificate does not verify against the CA sent: %w", err)
	}
	if len(server) > 0 {
		inter := x509.NewCertPool()
		for _, c := range server[1:] {
			inter.AddCert(c)
		}
		if _, err := server[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: set.host}); err != nil {
			return nil, fmt.Errorf("the CA sent does not verify the gateway's own certificate: %w", err)
		}
	}
	return cert, nil
}

// installRenewed writes the CA (when it changed) and then the certificate,
// each atomically and with its current permissions. If the certificate
// cannot be written, the previous CA is put back. The CA goes first because
// checkRenewed made sure it verifies the gateway: a crash in between leaves
// the old certificate, which the gateway still admits (same key).
func installRenewed(set *settings, certPEM, caPEM []byte) error {
	oldCA, readErr := os.ReadFile(set.caPath)
	caChanged := readErr != nil || !bytes.Equal(oldCA, caPEM)
	caPerm := permOf(set.caPath, 0o644)
	if caChanged {
		if err := atomicfile.WriteFile(set.caPath, caPEM, caPerm); err != nil {
			return fmt.Errorf("write the gateway CA: %w", err)
		}
	}
	if err := atomicfile.WriteFile(set.certPath, certPEM, permOf(set.certPath, 0o644)); err != nil {
		if caChanged && readErr == nil {
			if rerr := atomicfile.WriteFile(set.caPath, oldCA, caPerm); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore the gateway CA: %w", rerr))
			}
		}
		return fmt.Errorf("write the renewed certificate: %w", err)
	}
	return nil
}

// permOf returns the permission bits of path, or def if it cannot be read.
func permOf(path string, def fs.FileMode) fs.FileMode {
	if fi, err := os.Stat(path); err == nil {
		return fi.Mode().Perm()
	}
	return def
}
