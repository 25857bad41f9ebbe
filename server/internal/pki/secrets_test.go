package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Secrets survive Records and ParseSecrets, and two Authorities built from
// them for different names share the CA, the server key and the token key
// while each serves its own certificate from memory.
func TestNewFromSecrets(t *testing.T) {
	clk := newClock()
	sec, err := NewSecrets(testConfig(t, clk))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := sec.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(SecretNames) {
		t.Fatalf("Records has %d entries, want %d", len(recs), len(SecretNames))
	}
	back, err := ParseSecrets(recs)
	if err != nil || !back.Equal(sec) {
		t.Fatalf("ParseSecrets(Records()) = equal %v, %v", back.Equal(sec), err)
	}

	a1, err := New(back, testConfig(t, clk, "gw1.example"))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New(sec, testConfig(t, clk, "gw2.example"))
	if err != nil {
		t.Fatal(err)
	}
	if a1.CASPKISHA256() != a2.CASPKISHA256() || a1.ServerSPKISHA256() != a2.ServerSPKISHA256() || !a1.TokenKey().Equal(a2.TokenKey()) {
		t.Fatal("two Authorities from one set of secrets differ in CA, server key or token key")
	}
	if a1.ServerCert().DNSNames[0] != "gw1.example" || a2.ServerCert().DNSNames[0] != "gw2.example" {
		t.Errorf("server names %v and %v, want each replica's own", a1.ServerCert().DNSNames, a2.ServerCert().DNSNames)
	}
	if err := a2.ServerCert().CheckSignatureFrom(a1.CACert()); err != nil {
		t.Errorf("replica 2's certificate is not from the shared CA: %v", err)
	}
	clk.Advance(DefaultServerValidity)
	if renewed, err := a1.RenewServerIfNeeded(); err != nil || !renewed {
		t.Fatalf("RenewServerIfNeeded in memory: %v, %v", renewed, err)
	}
}

// ParseSecrets names the record at fault; New refuses a CA that does not
// match its key or has expired.
func TestSecretsRefused(t *testing.T) {
	clk := newClock()
	sec, err := NewSecrets(testConfig(t, clk))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSecrets(testConfig(t, clk))
	recs, _ := sec.Records()
	for _, tc := range []struct {
		name   string
		change func(map[string][]byte)
		want   string
	}{
		{"missing", func(r map[string][]byte) { delete(r, TokenKeyFile) }, "token.key is missing"},
		{"unknown", func(r map[string][]byte) { r["extra"] = nil }, `unknown secret "extra"`},
		{"corrupt", func(r map[string][]byte) { r[ServerKeyFile] = []byte("junk") }, "server.key: not a PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := map[string][]byte{}
			for k, v := range recs {
				r[k] = v
			}
			tc.change(r)
			if _, err := ParseSecrets(r); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseSecrets: %v, want %q", err, tc.want)
			}
		})
	}
	mixed := sec
	mixed.CAKey = other.CAKey
	if _, err := New(mixed, testConfig(t, clk)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("New with another CA's key: %v", err)
	}
	clk.Advance(11 * 365 * 24 * time.Hour)
	if _, err := New(sec, testConfig(t, clk)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("New with an expired CA: %v", err)
	}
}

// ReadSecrets reads a data directory's secrets as LoadOrCreate made them,
// and names a missing file.
func TestReadSecrets(t *testing.T) {
	dir := t.TempDir()
	a := mustLoad(t, dir, testConfig(t, newClock()))
	sec, err := ReadSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !sec.CACert.Equal(a.CACert()) || !sec.TokenKey.Equal(a.TokenKey()) || !sec.ServerKey.Equal(a.serverKey) {
		t.Fatal("ReadSecrets differs from the directory's Authority")
	}
	if err := os.Remove(filepath.Join(dir, TokenKeyFile)); err != nil {
		t.Fatal(err)
	}
	var fe *FileError
	if _, err := ReadSecrets(dir); !errors.As(err, &fe) || !errors.Is(err, fs.ErrNotExist) || filepath.Base(fe.Path) != TokenKeyFile {
		t.Fatalf("ReadSecrets without token.key: %v", err)
	}
}
