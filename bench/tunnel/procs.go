package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/outposthq/outpost/agent"
)

// child is a process the benchmark started. stop ends it; the kernel also
// kills it if the benchmark dies first (see childAttr).
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, set before done is closed
}

// startChild starts cmd with its stderr on ours (unless set) and reaps it in
// a goroutine that stop waits for.
func startChild(name string, cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = childAttr()
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// stop asks the process to end with SIGTERM, kills it after grace, and
// returns once it has been reaped.
func (c *child) stop(grace time.Duration) {
	if done, _ := c.exited(); done {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	c.wait(grace)
}

// wait waits up to grace for the process to end, then kills it and waits
// for it to be reaped.
func (c *child) wait(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// ctlChild is a child process that is this program in another mode,
// controlled through JSON lines: it prints a hello line on stdout, answers
// each request line written to its stdin with one response line, and exits
// when its stdin closes. Its methods are not safe for concurrent use.
type ctlChild struct {
	*child
	stdin    io.WriteCloser
	lines    chan []byte   // stdout lines; closed at EOF
	readDone chan struct{} // closed when the stdout reader has ended
}

// startCtlChild re-executes this program (exe) with args, and reads its
// hello line into hello, waiting at most a minute.
func startCtlChild(ctx context.Context, name, exe string, args []string, hello any) (_ *ctlChild, err error) {
	cmd := exec.Command(exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// A plain pipe (not StdoutPipe) so that reading it never races with
	// Wait: the reader owns the read end and sees EOF when the child exits.
	r, w, err := os.Pipe()
	if err != nil {
		stdin.Close()
		return nil, err
	}
	cmd.Stdout = w
	c, err := startChild(name, cmd)
	w.Close()
	if err != nil {
		stdin.Close()
		r.Close()
		return nil, err
	}
	g := &ctlChild{child: c, stdin: stdin, lines: make(chan []byte, 1), readDone: make(chan struct{})}
	go func() {
		defer close(g.readDone)
		defer close(g.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), maxRequestLine)
		for sc.Scan() {
			g.lines <- bytes.Clone(sc.Bytes())
		}
	}()
	defer func() {
		if err != nil {
			g.stop()
		}
	}()
	line, err := g.next(ctx, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("%s child hello: %w", name, err)
	}
	if err := json.Unmarshal(line, hello); err != nil {
		return nil, fmt.Errorf("%s child hello %q: %w", name, line, err)
	}
	return g, nil
}

// next returns the child's next stdout line, waiting at most timeout.
func (g *ctlChild) next(ctx context.Context, timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-g.lines:
		if !ok {
			<-g.done
			return nil, fmt.Errorf("%s child closed its output (exit: %v)", g.name, g.err)
		}
		return line, nil
	case <-t.C:
		return nil, fmt.Errorf("no answer from the %s child within %v", g.name, timeout)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// call sends r and waits at most timeout for the response.
func (g *ctlChild) call(ctx context.Context, r request, timeout time.Duration) (response, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return response{}, err
	}
	if _, err := g.stdin.Write(append(b, '\n')); err != nil {
		return response{}, fmt.Errorf("%s child %s: %w", g.name, r.Op, err)
	}
	line, err := g.next(ctx, timeout)
	if err != nil {
		return response{}, fmt.Errorf("%s child %s: %w", g.name, r.Op, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return response{}, fmt.Errorf("%s child %s: bad response %q: %w", g.name, r.Op, line, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("%s child %s: %s", g.name, r.Op, resp.Error)
	}
	return resp, nil
}

// stop closes the child's stdin (its signal to shut down gracefully),
// escalates to SIGTERM and then SIGKILL, and waits for the process and the
// stdout reader.
func (g *ctlChild) stop() {
	g.stdin.Close()
	g.wait(15 * time.Second)
	g.child.stop(5 * time.Second)
	// The reader ends at EOF, which the child's exit brings; lines may
	// still hold an unread line, so drain.
	for range g.lines {
	}
	<-g.readDone
}

// moduleRoot returns the directory of the go.mod of the current directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the outpost repository (go run ./bench/tunnel)")
	}
	return filepath.Dir(mod), nil
}

// buildOutpost builds the outpost binary of the module at root into dir.
func buildOutpost(ctx context.Context, root, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "outpost")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/outpost")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/outpost: %w", err)
	}
	return bin, nil
}

// enrollAgent runs `outpost agent enroll` with the token on stdin and
// returns the new agent's id.
func enrollAgent(ctx context.Context, bin, dir, token string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "agent", "enroll", "--token", "-", "--config-dir", dir, "--log-level", "warn")
	cmd.Stdin = strings.NewReader(token + "\n")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("outpost agent enroll: %w", err)
	}
	id, ok := agent.Enrolled(dir)
	if !ok {
		return "", fmt.Errorf("outpost agent enroll left no identity in %s", dir)
	}
	return id, nil
}
