//go:build unix

package e2e

import (
	"context"
	"database/sql"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/server"
)

// When the gateway refuses the session before any SSH byte (a token used
// up, or expired), ssh shows the reason "outpost connect" gives: it prints
// it to stderr before it closes stdout, on which ssh exits.
func TestConnectRefusalReachesSSH(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no ssh client: .ci/run installs openssh-client (CI is set, so this fails instead of skipping)")
		}
		skipSuite(t, "ssh", "no ssh client on this machine (apt-get install -y openssh-client)")
	}
	clk := fakeclock.New(time.Now())
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		directToLoopback(c)
		c.Now = clk.Now
	})
	target := tcpServer(t, echo)
	used := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	s, err := openSession(t, used)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	expired := gw.session(&outpostv1.CreateSessionRequest{Target: target, Ttl: durationpb.New(time.Second)})
	clk.Advance(2 * time.Second)

	for _, tc := range []struct {
		name string
		resp *outpostv1.CreateSessionResponse
		want string
	}{
		{"used", used, "outpost: session failed: session token refused: already used (it is single-use)"},
		{"expired", expired, "outpost: session failed: gateway refused the session (HTTP 401): session token refused: token: expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokFile, []byte(tc.resp.GetToken()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			proxyCmd := strings.Join([]string{outpostBinary(t), "connect", "--gateway", gw.url,
				"--ca-pin", tc.resp.GetGatewayCaSpkiSha256(), "--token-file", tokFile, "--stdio"}, " ")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
				"-o", "UserKnownHostsFile=/dev/null", "-o", "ProxyCommand="+proxyCmd, "nobody@target.invalid")
			cmd.Env = append(os.Environ(), "SHELL=/bin/sh")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("ssh succeeded:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("ssh's output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

// A program that resets its connection at the end of a complete run (as
// iperf3 does), on the client's side or the target's, ends its session
// normally: no ERROR line in "outpost connect", and the audit says reset,
// not error.
func TestConnectQuietResetEndings(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	const n = 64 << 10
	// The target sends its data, waits for the client's end, and resets.
	resetter := tcpServer(t, func(c *net.TCPConn) {
		if _, err := io.Copy(c, pattern(n)); err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.SetLinger(0)
	})
	for _, tc := range []struct {
		name, target, want string
	}{
		{"target resets", resetter, "session closed: the target reset the connection"},
		{"client resets", tcpServer(t, source(n)), "session closed: the local connection was reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := gw.session(&outpostv1.CreateSessionRequest{Target: tc.target})
			tokFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokFile, []byte(resp.GetToken()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			conn := runShell(t, strings.Join([]string{outpostBinary(t), "connect", "--gateway", gw.url, "--ca-pin",
				resp.GetGatewayCaSpkiSha256(), "--token-file", tokFile, "--listen", "127.0.0.1:0"}, " "), nil, nil)
			c, err := net.DialTimeout("tcp", conn.addr(t), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if got, err := io.ReadFull(c, make([]byte, n)); err != nil {
				t.Fatalf("read %d bytes: %v", got, err)
			}
			if tc.name == "client resets" {
				c.(*net.TCPConn).SetLinger(0)
			} else {
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c) // until the target's reset arrives
			}
			c.Close()
			// The token is single-use: connect ends after its session.
			if err := conn.wait(t); err != nil {
				t.Fatalf("outpost connect: %v\n%s", err, conn.stderr.String())
			}
			out := conn.stderr.String()
			if strings.Contains(out, "[ERROR]") || !strings.Contains(out, tc.want) {
				t.Fatalf("outpost connect logged, want %q and no ERROR:\n%s", tc.want, out)
			}
		})
	}
	gw.stop()
	db, err := sql.Open("sqlite", filepath.Join(gw.cfg.DataDir, "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT outcome, reason FROM sessions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var count int
	for rows.Next() {
		var outcome, reason string
		if err := rows.Scan(&outcome, &reason); err != nil {
			t.Fatal(err)
		}
		count++
		if outcome != "reset" {
			t.Errorf("audit outcome %s %q, want reset", outcome, reason)
		}
	}
	if count != 2 {
		t.Errorf("%d audit rows, want 2", count)
	}
}
