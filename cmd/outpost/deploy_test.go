package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unitFile is a systemd unit read as key → values (a key may repeat).
type unitFile map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", path, line)
		}
		u[k] = append(u[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: %d values, want 1", key, len(u[key]))
	}
	return u[key][0]
}

// envRef is a systemd environment reference in a command line.
var envRef = regexp.MustCompile(`\$\{?[A-Z_]+\}?`)

// The systemd units run outpost as a dedicated user, hardened, writing only
// to the directory their command line names; their ExecStart is a valid
// outpost command line; systemd-analyze verify accepts them.
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("../../deploy/systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("units: %v %v, want the gateway's and the agent's", units, err)
	}
	for _, path := range units {
		t.Run(filepath.Base(path), func(t *testing.T) {
			u := readUnit(t, path)
			for key, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "Restart": "on-failure", "ProtectHome": "yes"} {
				if got := u.one(t, key); got != want {
					t.Errorf("%s=%s, want %s", key, got, want)
				}
			}
			if user := u.one(t, "User"); user == "" || user == "root" || !strings.HasPrefix(user, "outpost") {
				t.Errorf("User=%s, want a dedicated user", user)
			}
			words := strings.Fields(envRef.ReplaceAllString(u.one(t, "ExecStart"), ""))
			if words[0] != "/usr/local/bin/outpost" {
				t.Errorf("ExecStart runs %s", words[0])
			}
			// The directory it writes is the one it may write, and its
			// state directory.
			var dir string
			for i, w := range words {
				if (w == "--data-dir" || w == "--config-dir") && i+1 < len(words) {
					dir = words[i+1]
				}
			}
			if rw := u.one(t, "ReadWritePaths"); dir == "" || rw != dir || "/var/lib/"+u.one(t, "StateDirectory") != dir {
				t.Errorf("ReadWritePaths=%s, StateDirectory=%s, the command writes %q", rw, u.one(t, "StateDirectory"), dir)
			}
			// The command line parses: --version stops right after.
			var out, errOut strings.Builder
			if err := run(context.Background(), append(words[1:], "--version"), strings.NewReader(""), &out, &errOut); err != nil {
				t.Errorf("ExecStart %v: %v", words[1:], err)
			}
			if words[1] == "agent" {
				if got := u.one(t, "ExecReload"); got != "/bin/kill -HUP $MAINPID" {
					t.Errorf("ExecReload=%s, want SIGHUP to the agent", got)
				}
			}
		})
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found (apt-get install -y systemd): the units' syntax is not verified")
	}
	// verify wants the ExecStart binary to exist: point it at this one.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var copies []string
	for _, path := range units {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(c, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/outpost", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, copies...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	// verify exits 0 on unknown keys and bad values, but prints them.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The container recipe copies what make build-static writes, runs it as a
// non-root user, and keeps the data directory in a volume.
func TestContainerfile(t *testing.T) {
	b, err := os.ReadFile("../../deploy/container/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"COPY bin/outpost-static /usr/local/bin/outpost",
		"USER 65532:65532",
		`VOLUME ["/var/lib/outpost"]`,
		`ENTRYPOINT ["/usr/local/bin/outpost"]`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
	if !strings.Contains(string(mk), "CGO_ENABLED=0 $(GO) build -trimpath") || !strings.Contains(string(mk), "-o bin/outpost-static ./cmd/outpost") {
		t.Error("make build-static does not write the static bin/outpost-static the Containerfile copies")
	}
}
