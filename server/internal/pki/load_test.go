package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testtls"
)

const day = 24 * time.Hour

func TestLoadOrCreateFirstStart(t *testing.T) {
	clk := newClock()
	dir := filepath.Join(t.TempDir(), "data") // created by LoadOrCreate
	log, logs := newLogger(t)
	a := mustLoad(t, dir, Config{Hostnames: []string{"GW.Example.com.", "10.0.0.5", "[2001:db8::1]"}, Now: clk.Now, Logger: log})

	if runtime.GOOS != "windows" {
		want := map[string]os.FileMode{
			CACertFile: 0o644, CAKeyFile: 0o600,
			ServerCertFile: 0o644, ServerKeyFile: 0o600,
			TokenKeyFile: 0o600,
		}
		for f, mode := range want {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s mode %v, want %v", f, fi.Mode().Perm(), mode)
			}
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
		}
	}
	for _, f := range []string{CAKeyFile, ServerKeyFile, TokenKeyFile} {
		block, _ := pem.Decode(readFile(t, filepath.Join(dir, f)))
		if block == nil || block.Type != "PRIVATE KEY" {
			t.Errorf("%s is not a PKCS#8 PEM key", f)
		}
	}
	for _, want := range []string{"created CA", "created server key", "created token key", "issued server certificate"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}

	ca := a.CACert()
	switch {
	case !ca.IsCA || !ca.BasicConstraintsValid:
		t.Error("CA is not a CA")
	case ca.MaxPathLen != 0 || !ca.MaxPathLenZero:
		t.Errorf("CA MaxPathLen %d (zero %v), want 0", ca.MaxPathLen, ca.MaxPathLenZero)
	case ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("CA key usage %v", ca.KeyUsage)
	case !ca.NotAfter.Equal(clk.Now().AddDate(10, 0, 0)):
		t.Errorf("CA NotAfter %v, want 10 years from %v", ca.NotAfter, clk.Now())
	case !ca.NotBefore.Equal(clk.Now().Add(-time.Minute)):
		t.Errorf("CA NotBefore %v", ca.NotBefore)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %s", keyKind(ca.PublicKey))
	}
	if ca.SerialNumber.BitLen() < 64 {
		t.Errorf("CA serial %v is not random-looking", ca.SerialNumber)
	}
	caDER, _ := pem.Decode(a.CACertPEM())
	if caDER == nil || !bytes.Equal(caDER.Bytes, ca.Raw) {
		t.Error("CACertPEM does not hold CACert")
	}
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	if got := a.CASPKISHA256(); got != hex.EncodeToString(sum[:]) || got != strings.ToLower(got) || len(got) != 64 {
		t.Errorf("CASPKISHA256 %q", got)
	}

	srv := a.ServerCert()
	if srv.Subject.CommonName != "gw.example.com" {
		t.Errorf("server CN %q, want the first host name", srv.Subject.CommonName)
	}
	if got, want := srv.DNSNames, []string{"gw.example.com", "localhost"}; !slices.Equal(got, want) {
		t.Errorf("server DNS SANs %q, want %q", got, want)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.5", "127.0.0.1", "::1", "2001:db8::1"}; !slices.Equal(ips, want) {
		t.Errorf("server IP SANs %q, want %q", ips, want)
	}
	if !slices.Equal(srv.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || srv.IsCA {
		t.Errorf("server EKU %v IsCA %v", srv.ExtKeyUsage, srv.IsCA)
	}
	if !srv.NotAfter.Equal(clk.Now().Add(DefaultServerValidity)) {
		t.Errorf("server NotAfter %v, want now+365d", srv.NotAfter)
	}
	if err := srv.CheckSignatureFrom(ca); err != nil {
		t.Errorf("server cert not signed by the CA: %v", err)
	}
	if got := a.ServerSPKISHA256(); got != transport.SPKISHA256(srv) {
		t.Errorf("ServerSPKISHA256 %s != SPKI of the server cert %s", got, transport.SPKISHA256(srv))
	}
	tc, err := a.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Certificate) != 2 || !bytes.Equal(tc.Certificate[0], srv.Raw) || !bytes.Equal(tc.Certificate[1], ca.Raw) {
		t.Error("GetCertificate chain is not [server, CA]")
	}
	if tk := a.TokenKey(); tk == nil || tk.Curve != elliptic.P256() {
		t.Error("token key is not P-256")
	}
	if pub := tc.PrivateKey.(*ecdsa.PrivateKey).Public(); !pub.(*ecdsa.PublicKey).Equal(srv.PublicKey) {
		t.Error("served private key does not match the certificate")
	}
	onDisk, err := loadCert(filepath.Join(dir, ServerCertFile))
	if err != nil || !bytes.Equal(onDisk.Raw, srv.Raw) {
		t.Errorf("server.pem differs from the served certificate (%v)", err)
	}
}

func TestLoadOrCreateReloadKeepsEverything(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	hosts := []string{"gw.example.com", "10.0.0.5"}
	a := mustLoad(t, dir, testConfig(t, clk, hosts...))
	before := snapshot(t, dir)

	clk.Advance(10 * day)
	log, logs := newLogger(t)
	b := mustLoad(t, dir, Config{Hostnames: hosts, Now: clk.Now, Logger: log})

	if !bytes.Equal(a.CACert().Raw, b.CACert().Raw) || a.CASPKISHA256() != b.CASPKISHA256() {
		t.Error("CA changed on reload")
	}
	if !bytes.Equal(a.ServerCert().Raw, b.ServerCert().Raw) {
		t.Error("server certificate re-issued on reload without reason")
	}
	if a.ServerSPKISHA256() != b.ServerSPKISHA256() {
		t.Error("server key changed on reload")
	}
	if !a.TokenKey().Equal(b.TokenKey()) {
		t.Error("token key changed on reload")
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Error("files rewritten on reload")
	}
	for _, want := range []string{"loaded CA", "loaded server key", "loaded token key", "loaded server certificate"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logs.String(), "created") || strings.Contains(logs.String(), "issued") {
		t.Errorf("reload logged a creation:\n%s", logs.String())
	}
	// The same names in another order and case are the same set; only the
	// common name (first entry) matters for order.
	c := mustLoad(t, dir, testConfig(t, clk, "GW.EXAMPLE.COM", "10.0.0.5", "localhost", "::1"))
	if !bytes.Equal(a.ServerCert().Raw, c.ServerCert().Raw) {
		t.Error("equivalent host names caused a re-issue")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestHostnamesChangedReissuesWithSameKey(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk, "gw.example.com", "10.0.0.5"))
	caBefore := readFile(t, filepath.Join(dir, CACertFile))

	b := mustLoad(t, dir, testConfig(t, clk, "gw2.example.com", "2001:db8::7"))
	srv := b.ServerCert()
	if bytes.Equal(srv.Raw, a.ServerCert().Raw) {
		t.Fatal("server certificate not re-issued after the host names changed")
	}
	if b.ServerSPKISHA256() != a.ServerSPKISHA256() || transport.SPKISHA256(srv) != a.ServerSPKISHA256() {
		t.Error("re-issue changed the server key: pins would break")
	}
	if srv.Subject.CommonName != "gw2.example.com" {
		t.Errorf("CN %q", srv.Subject.CommonName)
	}
	if want := []string{"gw2.example.com", "localhost"}; !slices.Equal(srv.DNSNames, want) {
		t.Errorf("DNS SANs %q, want %q", srv.DNSNames, want)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "2001:db8::7"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs %q, want %q", ips, want)
	}
	if srv.SerialNumber.Cmp(a.ServerCert().SerialNumber) == 0 {
		t.Error("re-issued certificate reuses the serial")
	}
	if !bytes.Equal(caBefore, readFile(t, filepath.Join(dir, CACertFile))) {
		t.Error("CA changed")
	}
	// Written to disk: a third start with the new names re-issues nothing.
	c := mustLoad(t, dir, testConfig(t, clk, "gw2.example.com", "2001:db8::7"))
	if !bytes.Equal(c.ServerCert().Raw, srv.Raw) {
		t.Error("the re-issued certificate was not persisted")
	}
	// Changing only the first name (the CN) re-issues too.
	d := mustLoad(t, dir, testConfig(t, clk, "2001:db8::7", "gw2.example.com"))
	if d.ServerCert().Subject.CommonName != "2001:db8::7" {
		t.Errorf("CN %q after reordering", d.ServerCert().Subject.CommonName)
	}
}

func TestServerRenewalNearExpiry(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk, "gw.example.com"))
	first := a.ServerCert()

	renewed, err := a.RenewServerIfNeeded()
	if err != nil || renewed {
		t.Fatalf("fresh certificate: renewed=%v err=%v", renewed, err)
	}
	// 31 days left: nothing to do.
	clk.Advance(first.NotAfter.Sub(clk.Now()) - 31*day)
	if renewed, err := a.RenewServerIfNeeded(); err != nil || renewed {
		t.Fatalf("31 days left: renewed=%v err=%v", renewed, err)
	}
	// Exactly 30 days left: renew.
	clk.Advance(day)
	renewed, err = a.RenewServerIfNeeded()
	if err != nil || !renewed {
		t.Fatalf("30 days left: renewed=%v err=%v", renewed, err)
	}
	second := a.ServerCert()
	if !second.NotAfter.Equal(clk.Now().Add(DefaultServerValidity)) {
		t.Errorf("renewed NotAfter %v, want now+365d", second.NotAfter)
	}
	if transport.SPKISHA256(second) != transport.SPKISHA256(first) || a.ServerSPKISHA256() != transport.SPKISHA256(first) {
		t.Error("renewal changed the server key")
	}
	if tc, _ := a.GetCertificate(nil); !bytes.Equal(tc.Certificate[0], second.Raw) {
		t.Error("GetCertificate still serves the old certificate")
	}
	if onDisk, err := loadCert(filepath.Join(dir, ServerCertFile)); err != nil || !bytes.Equal(onDisk.Raw, second.Raw) {
		t.Errorf("renewed certificate not written (%v)", err)
	}
	if renewed, err := a.RenewServerIfNeeded(); err != nil || renewed {
		t.Fatalf("right after renewal: renewed=%v err=%v", renewed, err)
	}
}

func TestServerRenewalOnLoad(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk, "gw.example.com"))
	clk.Advance(340 * day) // 25 days left
	b := mustLoad(t, dir, testConfig(t, clk, "gw.example.com"))
	if b.ServerCert().NotAfter.Sub(clk.Now()) < 300*day {
		t.Errorf("not renewed on load: expires %v", b.ServerCert().NotAfter)
	}
	if b.ServerSPKISHA256() != a.ServerSPKISHA256() {
		t.Error("renewal on load changed the key")
	}
}

func TestServerRenewalClockMovedBack(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk))
	clk.Advance(-time.Hour)
	renewed, err := a.RenewServerIfNeeded()
	if err != nil || !renewed {
		t.Fatalf("not-yet-valid certificate: renewed=%v err=%v", renewed, err)
	}
	if a.ServerCert().NotBefore.After(clk.Now()) {
		t.Error("renewed certificate still not valid")
	}
}

func TestServerValidityCappedAtCA(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk))
	caEnd := a.CACert().NotAfter
	// 10 days before the CA expires the server certificate is capped at the
	// CA's end and cannot be extended; it must not be re-issued on every call.
	clk.Advance(caEnd.Sub(clk.Now()) - 10*day)
	renewed, err := a.RenewServerIfNeeded()
	if err != nil || !renewed {
		t.Fatalf("renewed=%v err=%v", renewed, err)
	}
	if !a.ServerCert().NotAfter.Equal(caEnd) {
		t.Errorf("server NotAfter %v, want the CA's %v", a.ServerCert().NotAfter, caEnd)
	}
	if renewed, err := a.RenewServerIfNeeded(); err != nil || renewed {
		t.Fatalf("capped certificate re-issued again: renewed=%v err=%v", renewed, err)
	}
	// Once the CA has expired, loading fails with a clear error.
	clk.Advance(11 * day)
	_, err = LoadOrCreate(dir, testConfig(t, clk))
	var fe *FileError
	if !errors.As(err, &fe) || filepath.Base(fe.Path) != CACertFile || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired CA: %v", err)
	}
}

// TestConcurrentRenewAndServe runs handshakes' certificate lookups during
// renewals; -race checks the swap.
func TestConcurrentRenewAndServe(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk, "gw.example.com"))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tc, err := a.GetCertificate(nil)
				if err != nil || tc.Leaf == nil || len(tc.Certificate) != 2 {
					errs <- errors.New("bad certificate from GetCertificate")
					return
				}
				_ = a.ServerCert().NotAfter
			}
		})
	}
	for range 5 {
		clk.Advance(340 * day)
		if renewed, err := a.RenewServerIfNeeded(); err != nil || !renewed {
			t.Errorf("renewed=%v err=%v", renewed, err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTLSHandshake serves GetCertificate and connects with a client that
// trusts only the CA pool and checks the host name.
func TestTLSHandshake(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk, "gw.example.com", "10.0.0.5"))
	for _, name := range []string{"gw.example.com", "localhost", "10.0.0.5"} {
		t.Run(name, func(t *testing.T) {
			c, s := net.Pipe()
			srv := tls.Server(s, &tls.Config{GetCertificate: a.GetCertificate, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true})
			cli := tls.Client(c, &tls.Config{RootCAs: a.CAPool(), ServerName: name, Time: clk.Now, MinVersion: tls.VersionTLS13})
			done := make(chan error, 1)
			go func() { done <- srv.Handshake() }()
			err := cli.Handshake()
			// Close the raw pipe: a TLS close_notify would block on the
			// unbuffered pipe with nobody reading.
			c.Close()
			srvErr := <-done
			s.Close()
			if err != nil {
				t.Fatalf("client handshake: %v (server: %v)", err, srvErr)
			}
		})
	}
	c, s := net.Pipe()
	srv := tls.Server(s, &tls.Config{GetCertificate: a.GetCertificate, SessionTicketsDisabled: true})
	cli := tls.Client(c, &tls.Config{RootCAs: a.CAPool(), ServerName: "other.example.com", Time: clk.Now})
	done := make(chan struct{})
	go func() { defer close(done); srv.Handshake(); s.Close() }()
	var hostErr x509.HostnameError
	if err := cli.Handshake(); !errors.As(err, &hostErr) {
		t.Errorf("handshake for a name not in the certificate: %v, want a HostnameError", err)
	}
	c.Close()
	<-done
}

func TestCAPoolIsACopy(t *testing.T) {
	a := mustLoad(t, t.TempDir(), testConfig(t, newClock()))
	other := mustLoad(t, t.TempDir(), testConfig(t, newClock()))
	p := a.CAPool()
	p.AddCert(other.CACert())
	if a.CAPool().Equal(p) {
		t.Error("modifying CAPool's result changed the Authority's pool")
	}
	pem := a.CACertPEM()
	pem[0] = 'X'
	if a.CACertPEM()[0] == 'X' {
		t.Error("CACertPEM returns shared memory")
	}
}

func TestMissingTokenKeyRecreated(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk))
	if err := os.Remove(filepath.Join(dir, TokenKeyFile)); err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger(t)
	b := mustLoad(t, dir, Config{Now: clk.Now, Logger: log})
	if a.TokenKey().Equal(b.TokenKey()) {
		t.Error("token key not re-created")
	}
	if a.CASPKISHA256() != b.CASPKISHA256() {
		t.Error("CA changed")
	}
	if !strings.Contains(logs.String(), "[WARN]") {
		t.Error("re-creating the token key was not a warning")
	}
}

func TestMissingServerFilesRecreatedWithNewKey(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, clk))
	for _, f := range []string{ServerKeyFile, ServerCertFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	b := mustLoad(t, dir, testConfig(t, clk))
	if a.ServerSPKISHA256() == b.ServerSPKISHA256() {
		t.Error("a new server key was expected")
	}
	if a.CASPKISHA256() != b.CASPKISHA256() {
		t.Error("CA changed")
	}
}

func TestLoadOrCreateBadFiles(t *testing.T) {
	clk := newClock()
	// other is a second, unrelated gateway to take mismatched files from.
	other := t.TempDir()
	mustLoad(t, other, testConfig(t, clk))

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := testtls.KeyPEM(t, rsaKey)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384PEM := testtls.KeyPEM(t, p384)

	tests := []struct {
		name     string
		breakIt  func(t *testing.T, dir string)
		wantFile string // the file the error must name
		wantText string // and a word of the reason
	}{
		{"corrupt ca.key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CAKeyFile), []byte("garbage\n"))
		}, CAKeyFile, "not a PEM"},
		{"ca.key with corrupt DER", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}))
		}, CAKeyFile, "corrupt private key"},
		{"ca.key wrong block type", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
		}, CAKeyFile, "CERTIFICATE"},
		{"ca.key RSA", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CAKeyFile), rsaPEM)
		}, CAKeyFile, "RSA 2048"},
		{"ca.key P-384", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, CAKeyFile), p384PEM)
		}, CAKeyFile, "P-384"},
		{"ca.key two blocks", func(t *testing.T, dir string) {
			k := readFile(t, filepath.Join(dir, CAKeyFile))
			writeFile(t, filepath.Join(dir, CAKeyFile), append(k, k...))
		}, CAKeyFile, "unexpected data"},
		{"ca.key from another gateway", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(other, CAKeyFile), filepath.Join(dir, CAKeyFile))
		}, CACertFile, "does not match"},
		{"corrupt ca.pem", func(t *testing.T, dir string) {
			b := readFile(t, filepath.Join(dir, CACertFile))
			writeFile(t, filepath.Join(dir, CACertFile), b[:len(b)/2])
		}, CACertFile, "PEM"},
		{"ca.pem is the server certificate", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(dir, ServerCertFile), filepath.Join(dir, CACertFile))
		}, CACertFile, "not a CA"},
		{"ca.pem missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CACertFile))
		}, CACertFile, "missing"},
		{"ca.key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CAKeyFile))
		}, CAKeyFile, "missing"},
		{"corrupt server.key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, ServerKeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
		}, ServerKeyFile, "corrupt"},
		{"server.key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ServerKeyFile))
		}, ServerKeyFile, "missing"},
		{"server.key from another gateway", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(other, ServerKeyFile), filepath.Join(dir, ServerKeyFile))
		}, ServerCertFile, "does not match"},
		{"server pair from another gateway", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(other, ServerKeyFile), filepath.Join(dir, ServerKeyFile))
			copyFile(t, filepath.Join(other, ServerCertFile), filepath.Join(dir, ServerCertFile))
		}, ServerCertFile, "not issued by"},
		{"corrupt token.key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, TokenKeyFile), nil)
		}, TokenKeyFile, "not a PEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mustLoad(t, dir, testConfig(t, clk))
			tt.breakIt(t, dir)
			before := snapshot(t, dir)

			_, err := LoadOrCreate(dir, testConfig(t, clk))
			if err == nil {
				t.Fatal("LoadOrCreate succeeded")
			}
			t.Logf("error: %v", err)
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FileError", err)
			}
			if filepath.Base(fe.Path) != tt.wantFile || !strings.Contains(err.Error(), tt.wantFile) {
				t.Errorf("error names %s, want %s", fe.Path, tt.wantFile)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q lacks %q", err, tt.wantText)
			}
			if after := snapshot(t, dir); !mapsEqual(before, after) {
				t.Error("a failed load changed the files")
			}
		})
	}
}

// TestNoNewCAOverExistingGateway: with the CA files gone but other files
// present, LoadOrCreate refuses instead of creating a new CA.
func TestNoNewCAOverExistingGateway(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	mustLoad(t, dir, testConfig(t, clk))
	for _, f := range []string{CACertFile, CAKeyFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadOrCreate(dir, testConfig(t, clk))
	if err == nil || !strings.Contains(err.Error(), "refusing to create a new CA") {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created", f)
		}
	}
}

func TestLoadOrCreateInvalidConfig(t *testing.T) {
	clk := newClock()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative server validity", Config{ServerValidity: -time.Hour}},
		{"negative agent validity", Config{AgentValidity: -time.Hour}},
		{"negative renew-before", Config{ServerRenewBefore: -time.Hour}},
		{"renew-before not shorter than validity", Config{ServerValidity: 10 * day, ServerRenewBefore: 10 * day}},
		{"renew-before default vs short validity", Config{ServerValidity: 10 * day}},
		{"invalid host name", Config{Hostnames: []string{"bad name"}}},
		{"empty host name", Config{Hostnames: []string{""}}},
		{"empty label", Config{Hostnames: []string{"a..b"}}},
		{"label with leading hyphen", Config{Hostnames: []string{"-a.example"}}},
		{"label too long", Config{Hostnames: []string{strings.Repeat("a", 64) + ".example"}}},
		{"IPv6 with zone", Config{Hostnames: []string{"fe80::1%eth0"}}},
		{"host:port", Config{Hostnames: []string{"gw.example.com:7171"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.cfg.Now = clk.Now
			if _, err := LoadOrCreate(dir, tt.cfg); err == nil {
				t.Fatal("LoadOrCreate accepted invalid options")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("invalid options still wrote %d files", len(ents))
			}
		})
	}
	if _, err := LoadOrCreate("", Config{}); err == nil {
		t.Error("empty directory accepted")
	}
	// Accepted forms.
	a := mustLoad(t, t.TempDir(), testConfig(t, clk, "*.tunnel.example.com", "[::1]", "::ffff:10.1.2.3", "host_1"))
	if got := a.ServerCert().DNSNames; !slices.Contains(got, "*.tunnel.example.com") || !slices.Contains(got, "host_1") {
		t.Errorf("DNS SANs %q", got)
	}
	if got := a.ServerCert().IPAddresses; !slices.ContainsFunc(got, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.1.2.3")) }) {
		t.Errorf("IP SANs %v lack the unmapped 10.1.2.3", got)
	}
}
