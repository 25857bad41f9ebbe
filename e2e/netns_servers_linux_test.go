package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Real servers on a target host: OpenSSH's sshd and nginx, each with its
// own configuration in a temporary directory, nothing from /etc.

// sshdTarget is an sshd accepting one generated key for root.
type sshdTarget struct {
	addr string // ip:22
	key  string // the client's private key
}

// startSSHD runs sshd in ns, listening on ip:22. sshd insists on
// /run/sshd; it gets a private tmpfs on /run inside its own mount namespace
// ("ip netns exec" makes one), so nothing is created on the host.
func (l *netLab) startSSHD(t testing.TB, ns, ip string) sshdTarget {
	t.Helper()
	dir := l.t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	userKey := filepath.Join(dir, "id_ed25519")
	for _, k := range []string{hostKey, userKey} {
		if err := l.run(ns, 20*time.Second, nil, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "outpost-e2e", "-f", k); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sshd_config")
	nsWriteFile(t, conf, strings.Join([]string{
		"Port 22",
		"ListenAddress " + ip,
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + authorized,
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"X11Forwarding no",
		"PrintMotd no",
		"LogLevel VERBOSE",
	}, "\n")+"\n")
	script := "mount -t tmpfs -o mode=0755 outpost-e2e-run /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f " + conf
	l.startProc(t, ns, "sshd", nil, "sh", "-c", script)
	return sshdTarget{addr: ip + ":22", key: userKey}
}

// nginxTarget is an nginx serving files from www.
type nginxTarget struct {
	addr string // ip:80
	www  string
}

// startNginx runs nginx in ns on ip:80, serving a fresh directory.
func (l *netLab) startNginx(t testing.TB, ns, ip string) nginxTarget {
	t.Helper()
	dir := l.t.TempDir()
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := func(name string) string { return filepath.Join(dir, "tmp", name) }
	conf := filepath.Join(dir, "nginx.conf")
	nsWriteFile(t, conf, fmt.Sprintf(`user root;
daemon off;
worker_processes 1;
pid %s;
error_log stderr info;
events { worker_connections 256; }
http {
	access_log %s;
	client_body_temp_path %s;
	proxy_temp_path %s;
	fastcgi_temp_path %s;
	uwsgi_temp_path %s;
	scgi_temp_path %s;
	default_type application/octet-stream;
	types { text/html html; }
	sendfile on;
	server {
		listen %s:80;
		root %s;
	}
}
`, filepath.Join(dir, "nginx.pid"), filepath.Join(l.logDir, "nginx-access.log"),
		tmp("body"), tmp("proxy"), tmp("fastcgi"), tmp("uwsgi"), tmp("scgi"), ip, www))
	l.startProc(t, ns, "nginx", nil, "nginx", "-e", "stderr", "-p", dir, "-c", conf)
	return nginxTarget{addr: ip + ":80", www: www}
}

// nsRandomFile writes n pseudo-random bytes to path and returns their SHA-256
// (hex).
func nsRandomFile(t testing.TB, path string, n int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), nsRandomStream(n, seed)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// nsRandomStream is n pseudo-random bytes from seed.
func nsRandomStream(n int64, seed uint64) io.Reader {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

func nsWriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
