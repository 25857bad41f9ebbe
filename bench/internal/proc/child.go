// Package proc supervises and measures the benchmark's child processes: it
// starts them (and has the kernel kill them if the benchmark dies first),
// talks to the ones that are the benchmark re-executed in another mode
// through JSON lines on their stdin and stdout (both sides of that: CtlChild
// for the parent, Serve for the child), reads their CPU time and memory from
// /proc, profiles them with runtime/pprof and reads the profiles with
// `go tool pprof`, and describes the machine a run happens on.
//
// It is Linux-first: /proc, PR_SET_PDEATHSIG, UDP offload and RLIMIT_NOFILE
// are Linux's; elsewhere those functions return errors.ErrUnsupported (or do
// nothing) so that the program still builds.
package proc

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Child is a process the benchmark started. Stop ends it; the kernel also
// kills it if the benchmark dies first (see Attr). Its methods are safe for
// concurrent use.
type Child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, set before done is closed
}

// Start starts cmd, whose SysProcAttr it sets to Attr(), with its stderr on
// ours unless cmd.Stderr is set, and reaps it on a goroutine that Stop
// waits for. name is what errors and logs call it. The error is Start's.
func Start(name string, cmd *exec.Cmd) (*Child, error) {
	cmd.SysProcAttr = Attr()
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { // ends when the process does; Stop and Wait wait for it
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Name is the name Start was given.
func (c *Child) Name() string { return c.name }

// PID is the process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Done is closed once the process has ended and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the process has ended, and how (exec.Cmd.Wait's
// error).
func (c *Child) Exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// Stop asks the process to end with SIGTERM, kills it after grace, and
// returns once it has been reaped. It does nothing if the process has
// already ended.
func (c *Child) Stop(grace time.Duration) {
	if done, _ := c.Exited(); done {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	c.wait(grace)
}

// Kill kills the process with SIGKILL (kill -9: no chance to say goodbye)
// and returns once it has been reaped. It does nothing if the process has
// already ended.
func (c *Child) Kill() {
	if done, _ := c.Exited(); done {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// wait waits up to grace for the process to end, then kills it and waits
// for it to be reaped.
func (c *Child) wait(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
